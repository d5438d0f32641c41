-- Dovecot 2.3 Lua passdb for Dovecot proxies in front of a directord cluster: asks directord's
-- auth_http listener (nginx's protocol) which backend serves the user, and answers
-- proxy=y host=... port=... nopassword=y, so the proxy forwards the login and the backend
-- checks the password.
--
-- Needs dovecot-auth-lua (Debian). Configure in the proxy's dovecot.conf:
--
--   import_environment = $import_environment DIRECTOR_AUTH_HTTP_URL=http://127.0.0.1:9080/auth DIRECTOR_PROXY_REFRESH=450
--   passdb {
--     driver = lua
--     args = file=/etc/dovecot/director-auth-http.lua blocking=yes
--   }
--
-- DIRECTOR_PROXY_REFRESH (seconds, default 450: half of director_user_expire's default) is
-- returned as proxy_refresh: while a session is open, the proxy's login process writes the
-- user's name to its proxy-notify FIFO that often, and directord, given that FIFO
-- (fifo_listener in its service director), keeps the user's assignment alive.
--
-- A temporary failure of the director (Auth-Wait in its answer) or an unreachable director
-- gives the client Dovecot's temporary authentication failure; a refused request fails the
-- login.

local url = os.getenv("DIRECTOR_AUTH_HTTP_URL") or "http://127.0.0.1:9080/auth"
local proxy_refresh = os.getenv("DIRECTOR_PROXY_REFRESH") or "450"

-- Dovecot's service name to nginx's Auth-Protocol.
local protocols = { imap = "imap", pop3 = "pop3", submission = "smtp" }

local client = dovecot.http.client {
  timeout = 35000;
  max_attempts = 1;
}

function auth_passdb_lookup(req)
  local protocol = protocols[req.service]
  if protocol == nil then
    return dovecot.auth.PASSDB_RESULT_USER_UNKNOWN, "service " .. tostring(req.service) .. " is not routed"
  end
  local request = client:request { url = url; method = "GET"; }
  -- nginx escapes the user name the same way: '%' and bytes outside printable ASCII.
  local user = string.gsub(req.user, "[%%%c%s\128-\255]", function(c)
    return string.format("%%%02X", string.byte(c))
  end)
  request:add_header("Auth-User", user)
  request:add_header("Auth-Protocol", protocol)
  request:add_header("Auth-Method", "plain")
  if req.remote_ip ~= nil then
    request:add_header("Client-IP", req.remote_ip)
  end
  local response = request:submit()
  if response:status() ~= 200 then
    return dovecot.auth.PASSDB_RESULT_INTERNAL_FAILURE,
      "director auth_http answered " .. response:status() .. " " .. tostring(response:reason())
  end
  local status = response:header("Auth-Status")
  if status ~= "OK" then
    if response:header("Auth-Wait") ~= nil then
      return dovecot.auth.PASSDB_RESULT_INTERNAL_FAILURE, "director: " .. tostring(status)
    end
    return dovecot.auth.PASSDB_RESULT_USER_UNKNOWN, "director: " .. tostring(status)
  end
  return dovecot.auth.PASSDB_RESULT_OK, {
    proxy = "y",
    nopassword = "y",
    host = response:header("Auth-Server"),
    port = response:header("Auth-Port"),
    proxy_refresh = proxy_refresh,
  }
end

function script_init()
  return 0
end
