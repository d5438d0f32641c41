//! Runs the daemon: binds the admin listeners, starts the driver and the mail proxy, and
//! handles signals until told to stop (or until the driver stops).

use std::path::PathBuf;
use std::sync::Arc;

use anyhow::Context;
use tokio::signal::unix::{signal, Signal, SignalKind};
use tokio::sync::watch;

use director_driver::{
    Clock, DirectorHandle, Directors, DriverConfig, DriverExit, LocalSessions, RingView,
    SaveOutcome, StateConfig, StateStore,
};

use crate::admin::connection::ConnectionContext;
use crate::admin::listener;
use crate::service_notify::ServiceNotify;
use crate::settings::DaemonSettings;

/// Re-reads the configuration for SIGHUP; returns the new settings or why not.
pub type Reloader = Box<dyn Fn() -> anyhow::Result<DaemonSettings> + Send + Sync>;

/// Runs until SIGTERM/SIGINT. Returns after the listeners stopped and the socket file is gone.
pub async fn run(settings: DaemonSettings, reloader: Reloader) -> anyhow::Result<()> {
    // Handlers first: a SIGHUP/SIGTERM that arrives right after we announce the socket must
    // not hit the default action (terminate).
    let signals = Signals::install()?;
    let service = ServiceNotify::from_env();
    // Before anything is written there: a base_dir another user planted is refused (the
    // embedded default config keeps its state there too).
    listener::ensure_dir(&settings.base_dir)?;
    // Then, before any socket is bound or replaced: a second director started on the same
    // state_dir stops here, and the first one keeps everything it serves.
    let state = match &settings.saved_state {
        Some((dir, save_interval)) => Some(StateConfig {
            store: Arc::new(StateStore::open(dir).with_context(|| {
                format!(
                    "state_dir {}: the state is saved there (director_state_save_interval = 0 \
                     turns saving off)",
                    dir.display()
                )
            })?),
            save_interval: *save_interval,
        }),
        None => None,
    };
    // The director state and the admin sockets run on one thread of their own, like
    // Dovecot's single director process: admin requests and the driver then never cross
    // threads (a wake-up between threads costs more than a USER-LOOKUP). The mail proxy
    // runs on worker threads of its own (`director_proxy_workers`).
    let core_thread = CoreThread::start()?;
    let core_context = core_thread.handle.enter();
    let mut unix = Vec::new();
    for spec in &settings.admin_sockets {
        unix.push((spec.path.clone(), listener::bind_unix(spec)?));
    }
    let tcp = crate::admin::tcp::bind_all(&settings.admin_tcp)?;
    let auth_http = crate::auth_http::bind_all(&settings.auth_http)?;
    let metrics = crate::metrics::bind_all(&settings.metrics)?;
    let mut notify = Vec::new();
    for spec in &settings.notify_fifos {
        notify.push((spec.path.clone(), crate::proxy_notify::open(spec)?));
    }

    // With the built-in proxy, kicks act on its sessions; without it there are none.
    let registry = settings
        .proxy
        .as_ref()
        .map(|p| director_proxy::SessionRegistry::new(p.username_hash.clone()));
    let sessions: Arc<dyn LocalSessions> = match &registry {
        Some(r) => Arc::clone(r) as Arc<dyn LocalSessions>,
        None => Arc::new(director_driver::NoLocalSessions),
    };
    let mut ring_listeners = Vec::new();
    let directors = match &settings.ring {
        Some(ring) => {
            for addr in &ring.listen {
                ring_listeners.push((*addr, crate::ring_listener::bind(*addr)?));
            }
            Directors::Ring {
                config: ring.config.clone(),
                output_buffer_size: ring.output_buffer_size,
                dialer: director_driver::RingDialer::listed(),
            }
        }
        None => Directors::Standalone(RingView::new(settings.self_addr.0, settings.self_addr.1)),
    };
    let (director, driver_task) = director_driver::spawn(DriverConfig {
        core: settings.core.clone(),
        directors,
        sessions,
        clock: Clock::new(),
        state,
    })
    .context("build the director state")?;

    let (shutdown_tx, shutdown_rx) = watch::channel(false);
    let slots = listener::connection_slots();
    let ctx = ConnectionContext {
        director: director.clone(),
    };
    let mut loops = Vec::new();
    let socket_paths: Vec<PathBuf> = unix.iter().map(|(p, _)| p.clone()).collect();
    for (path, l) in unix {
        loops.push(core_thread.handle.spawn(listener::accept_loop(
            l,
            path.display().to_string(),
            slots.clone(),
            ctx.clone(),
            shutdown_rx.clone(),
        )));
    }
    // TCP clients have slots of their own: they can never take the UNIX socket's.
    let tcp_admin = crate::admin::tcp::TcpAdmin::new(&settings.admin_tcp, ctx.clone());
    for (spec, l) in tcp {
        tracing::info!(address = %spec.addr, tls = spec.tls, "admin TCP listener ready");
        loops.push(
            core_thread
                .handle
                .spawn(tcp_admin.accept_loop(l, spec, shutdown_rx.clone())),
        );
    }
    drop(tcp_admin);
    for (addr, l) in ring_listeners {
        tracing::info!(address = %addr, "ring listener ready");
        loops.push(core_thread.handle.spawn(crate::ring_listener::accept_loop(
            l,
            director.clone(),
            shutdown_rx.clone(),
        )));
    }
    // nginx's auth_http requests are served on this thread too: each is one login.
    let auth_http_server =
        crate::auth_http::AuthHttp::server(&settings.auth_http, director.clone());
    for (addr, l) in auth_http {
        tracing::info!(address = %addr, "auth_http listener ready");
        loops.push(core_thread.handle.spawn(auth_http_server.accept_loop(
            l,
            addr,
            shutdown_rx.clone(),
        )));
    }
    drop(auth_http_server);
    for (path, fifo) in notify {
        tracing::info!(path = %path.display(), "proxy-notify FIFO ready");
        loops.push(core_thread.handle.spawn(crate::proxy_notify::serve(
            fifo,
            path,
            director.clone(),
            shutdown_rx.clone(),
        )));
    }
    drop(ctx);
    // The proxy starts its own worker threads; the rest stays on the main thread.
    drop(core_context);

    let proxy = match (settings.proxy.clone(), registry) {
        (Some(proxy_settings), Some(registry)) => {
            let proxy = director_proxy::Proxy::start(
                proxy_settings,
                director.clone(),
                registry,
                Arc::new(director_proxy::NoBackendHook),
            )
            .await
            .context("start the mail proxy")?;
            for (spec, addr) in proxy.local_addrs() {
                tracing::info!(protocol = spec.protocol.name(), listener = %spec.name, address = %addr, "mail proxy listener ready");
            }
            Some(proxy)
        }
        _ => None,
    };
    // After the proxy: the probes use its TLS connector. On the director's thread, as the
    // admin requests are.
    let health_counters = settings
        .health
        .as_ref()
        .map(|_| Arc::new(crate::health::HealthCounters::default()));
    if let (Some(health), Some(counters)) = (settings.health.clone(), &health_counters) {
        let tls = probe_connector(&health, proxy.as_ref())?;
        tracing::info!(interval = ?health.interval, protocols = ?health.probes, tls = ?health.tls, "backend health checks on");
        loops.push(core_thread.handle.spawn(crate::health::run(
            director.clone(),
            health,
            tls,
            Arc::clone(counters),
            shutdown_rx.clone(),
        )));
    }
    // After the proxy, whose counters it shows; on the director's thread, as the admin
    // requests are (a scrape takes the state once, like one).
    let metrics_server = crate::metrics::MetricsService::server(
        &settings.metrics,
        crate::metrics::Sources {
            director: director.clone(),
            proxy: proxy.as_ref().map(|p| crate::metrics::ProxySource {
                metrics: p.metrics(),
                registry: p.registry(),
                protocols: login_protocols(p),
                budget: p.buffer_budget(),
                lmtp: p
                    .local_addrs()
                    .iter()
                    .any(|(spec, _)| spec.protocol == director_proxy::Protocol::Lmtp),
            }),
            health: health_counters,
        },
    );
    for (addr, l) in metrics {
        tracing::info!(address = %addr, "metrics listener ready");
        loops.push(core_thread.handle.spawn(metrics_server.accept_loop(
            l,
            addr,
            shutdown_rx.clone(),
        )));
    }
    drop(metrics_server);

    // The documented start-up line: scripts and tests read the socket path from it.
    let main_socket = socket_paths.first().cloned().unwrap_or_default();
    // A closed stdout (some supervisors) must not kill us: ignore write errors.
    {
        use std::io::Write;
        let mut out = std::io::stdout().lock();
        let _ = writeln!(out, "directord: admin socket {}", main_socket.display());
        let _ = out.flush();
    }
    tracing::info!(
        version = env!("CARGO_PKG_VERSION"),
        socket = %main_socket.display(),
        "directord started"
    );
    service.ready();

    let outcome = signals
        .wait(&director, proxy.as_ref(), &reloader, &service)
        .await;

    tracing::info!("shutting down");
    service.stopping();
    if let Some(proxy) = proxy {
        // Stop accepting, let proxied sessions drain (director_proxy_drain_time), then close.
        proxy.shutdown(None).await;
    }
    let _ = shutdown_tx.send(true);
    for l in loops {
        let _ = l.await;
    }
    for path in &socket_paths {
        if let Err(e) = std::fs::remove_file(path) {
            tracing::warn!(path = %path.display(), error = %e, "could not remove admin socket");
        }
    }
    // Last, once nothing changes the state any more; never after a panic abandoned it.
    if outcome.is_ok() {
        save_at_shutdown(&director).await;
    }
    drop(director);
    // Connection tasks still hold handles; don't wait for idle clients.
    driver_task.abort();
    core_thread.stop();
    outcome
}

/// The TLS connector of the health probes: the proxy's while it has one (the same CA file,
/// reloaded with it), else one built here from `ssl_client_ca_file`.
fn probe_connector(
    health: &crate::health::HealthSettings,
    proxy: Option<&director_proxy::Proxy>,
) -> anyhow::Result<crate::health::ConnectorSource> {
    let own = match (&health.ca_pem, health.tls) {
        (_, director_proxy::BackendTlsMode::None) | (None, _) => None,
        (Some(ca), _) => Some(
            director_proxy::tls::backend_connector(ca)
                .context("director_health_check_ssl: ssl_client_ca_file")?,
        ),
    };
    Ok(match proxy {
        Some(p) => {
            let proxy_connector = p.backend_connector();
            Arc::new(move || proxy_connector().or_else(|| own.clone()))
        }
        None => Arc::new(move || own.clone()),
    })
}

/// The final save of the state (SIGTERM, SIGINT).
async fn save_at_shutdown(director: &DirectorHandle) {
    let outcome = director.save_state().await;
    match outcome {
        SaveOutcome::Saved(r) => tracing::info!(
            hosts = r.hosts,
            users = r.users,
            bytes = r.bytes,
            elapsed_ms = r.elapsed.as_millis() as u64,
            "state saved at shutdown"
        ),
        SaveOutcome::Disabled => {}
        SaveOutcome::Stopped => tracing::error!("state not saved at shutdown: the driver stopped"),
        SaveOutcome::Failed(e) => {
            tracing::error!(error = %e, "saving the state at shutdown failed")
        }
    }
}

/// The thread that runs the director driver and the admin connections.
struct CoreThread {
    handle: tokio::runtime::Handle,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl CoreThread {
    fn start() -> anyhow::Result<CoreThread> {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .context("start the director runtime")?;
        let handle = runtime.handle().clone();
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let thread = std::thread::Builder::new()
            .name("director".into())
            .spawn(move || {
                // Spawned tasks run while this thread blocks here.
                runtime.block_on(async {
                    let _ = stopped.await;
                });
                // Idle admin clients are dropped with the runtime.
                runtime.shutdown_background();
            })
            .context("start the director thread")?;
        Ok(CoreThread {
            handle,
            stop: Some(stop),
            thread: Some(thread),
        })
    }

    fn stop(mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(thread) = self.thread.take() {
            if thread.join().is_err() {
                tracing::error!("director thread panicked");
            }
        }
    }
}

/// The signals the daemon handles, installed before anything is announced.
struct Signals {
    hup: Signal,
    term: Signal,
    int: Signal,
}

impl Signals {
    fn install() -> anyhow::Result<Signals> {
        Ok(Signals {
            hup: signal(SignalKind::hangup()).context("install SIGHUP handler")?,
            term: signal(SignalKind::terminate()).context("install SIGTERM handler")?,
            int: signal(SignalKind::interrupt()).context("install SIGINT handler")?,
        })
    }

    /// Serves SIGHUP reloads until SIGTERM or SIGINT arrives (`Ok`), or the driver stops
    /// (an error: the state was abandoned after a panic, and the supervisor must restart us).
    async fn wait(
        mut self,
        director: &DirectorHandle,
        proxy: Option<&director_proxy::Proxy>,
        reloader: &Reloader,
        service: &ServiceNotify,
    ) -> anyhow::Result<()> {
        loop {
            tokio::select! {
                _ = self.hup.recv() => {
                    service.reloading();
                    reload(director, proxy, reloader).await;
                    service.ready();
                }
                _ = self.term.recv() => { tracing::info!("SIGTERM received"); return Ok(()); }
                _ = self.int.recv() => { tracing::info!("SIGINT received"); return Ok(()); }
                exit = director.stopped() => {
                    return Err(match exit {
                        DriverExit::Crashed => anyhow::anyhow!("the director state was abandoned after a panic"),
                        DriverExit::Stopped => anyhow::anyhow!("the director driver stopped"),
                    });
                }
            }
        }
    }
}

async fn reload(
    director: &DirectorHandle,
    proxy: Option<&director_proxy::Proxy>,
    reloader: &Reloader,
) {
    tracing::info!("SIGHUP received, reloading configuration");
    let settings = match reloader() {
        Ok(s) => s,
        Err(e) => {
            tracing::error!(error = %format!("{e:#}"), "reload failed, keeping the old configuration");
            return;
        }
    };
    // The proxy first: new certificates matter most to an operator who sends SIGHUP.
    match (proxy, settings.proxy.clone()) {
        (Some(proxy), Some(new)) => match proxy.reload(new) {
            Ok(summary) if summary.need_restart.is_empty() => {
                tracing::info!("mail proxy settings reloaded")
            }
            Ok(summary) => tracing::warn!(
                unchanged = ?summary.need_restart,
                "mail proxy settings reloaded; these changes need a restart"
            ),
            Err(e) => tracing::error!(
                error = %e,
                "mail proxy reload failed, keeping the old proxy settings"
            ),
        },
        (Some(_), None) => tracing::warn!(
            "the new configuration has no mail proxy listeners; removing them needs a restart"
        ),
        (None, Some(_)) => tracing::warn!(
            "the new configuration adds mail proxy listeners; adding them needs a restart"
        ),
        (None, None) => {}
    }
    let hosts = settings.config_hosts();
    let count = hosts.len();
    match director.reload(hosts).await {
        Some(Ok(summary)) => tracing::info!(
            mail_servers = count,
            changes = %summary,
            "director_mail_servers reloaded"
        ),
        Some(Err(e)) => {
            tracing::error!(error = %e, "reload refused, keeping the old configuration")
        }
        None => tracing::error!("reload failed: the director driver has stopped"),
    }
}

/// The protocols the proxy serves logins of (LMTP has none), in `Protocol::ALL` order.
fn login_protocols(proxy: &director_proxy::Proxy) -> Vec<director_proxy::Protocol> {
    director_proxy::Protocol::ALL
        .into_iter()
        .filter(|p| *p != director_proxy::Protocol::Lmtp)
        .filter(|p| {
            proxy
                .local_addrs()
                .iter()
                .any(|(spec, _)| spec.protocol == *p)
        })
        .collect()
}
