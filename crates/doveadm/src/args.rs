//! Command-line parsing compatible with doveadm's: the global options are
//! parsed like `getopt("+…")` (stop at the first word), and each
//! `director` subcommand like doveadm's "ver2" commands: GNU
//! `getopt_long` with argument permutation, a long option for *every*
//! parameter (positional ones too, e.g. `--host`), unambiguous prefixes of
//! long options, and leftover words assigned to the positional parameters
//! in order. Error texts are glibc's, prefixed with the command's last word
//! (`add: invalid option -- '5'`).

use std::collections::HashMap;

/// Upper bound on argv words we look at: far above any real use, it only
/// keeps a hostile argv from making us allocate without bound.
pub const MAX_ARGS: usize = 4096;

/// What a parameter holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ParamKind {
    /// A string (`-a PATH`).
    Str,
    /// A flag without argument (`-F`).
    Bool,
    /// A signed 64-bit number; an unparsable value leaves it unset
    /// (doveadm's `str_to_int64` failure is silent).
    Int64,
}

/// One parameter of a subcommand.
#[derive(Debug, Clone, Copy)]
pub struct Param {
    /// Short option letter, if any.
    pub short: Option<u8>,
    /// Long option name (also the key for [`Parsed`]).
    pub long: &'static str,
    /// Value type.
    pub kind: ParamKind,
    /// Filled from leftover words, in declaration order.
    pub positional: bool,
}

impl Param {
    /// A `-x STR` option.
    pub const fn opt(short: u8, long: &'static str) -> Self {
        Self {
            short: Some(short),
            long,
            kind: ParamKind::Str,
            positional: false,
        }
    }
    /// A `-x` flag.
    pub const fn flag(short: u8, long: &'static str) -> Self {
        Self {
            short: Some(short),
            long,
            kind: ParamKind::Bool,
            positional: false,
        }
    }
    /// A long-only numeric option (`--max-parallel N`).
    pub const fn long_int(long: &'static str) -> Self {
        Self {
            short: None,
            long,
            kind: ParamKind::Int64,
            positional: false,
        }
    }
    /// A positional string parameter.
    pub const fn pos(long: &'static str) -> Self {
        Self {
            short: None,
            long,
            kind: ParamKind::Str,
            positional: true,
        }
    }
}

/// A parameter value.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Value {
    /// String bytes.
    Str(Vec<u8>),
    /// Flag set.
    Bool,
    /// Parsed number.
    Int(i64),
}

/// Parsed subcommand parameters, by long name.
#[derive(Debug, Default, Clone)]
pub struct Parsed {
    values: HashMap<&'static str, Value>,
}

impl Parsed {
    /// A string parameter, if given.
    pub fn str(&self, name: &str) -> Option<&[u8]> {
        match self.values.get(name) {
            Some(Value::Str(s)) => Some(s),
            _ => None,
        }
    }
    /// Whether a flag was given.
    pub fn flag(&self, name: &str) -> bool {
        matches!(self.values.get(name), Some(Value::Bool))
    }
    /// A numeric parameter, if given and valid.
    pub fn int(&self, name: &str) -> Option<i64> {
        match self.values.get(name) {
            Some(Value::Int(n)) => Some(*n),
            _ => None,
        }
    }
    /// Whether the parameter was given at all.
    pub fn has(&self, name: &str) -> bool {
        self.values.contains_key(name)
    }
}

/// Why parsing failed: the full stderr line to print (exit code 64).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ParseError(pub String);

/// Dovecot's `str_to_int64`: optional `-`, then at least one decimal digit,
/// nothing else, within `i64`.
pub fn str_to_int64(s: &[u8]) -> Option<i64> {
    let (neg, digits) = match s.split_first() {
        Some((b'-', rest)) => (true, rest),
        _ => (false, s),
    };
    if digits.is_empty() || !digits.iter().all(u8::is_ascii_digit) {
        return None;
    }
    let mut n: i128 = 0;
    for &d in digits {
        n = n * 10 + i128::from(d - b'0');
        if n > i128::from(i64::MAX) + 1 {
            return None;
        }
    }
    let n = if neg { -n } else { n };
    i64::try_from(n).ok()
}

fn lossy(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

/// Parses a subcommand's argv (after the command words) the way doveadm's
/// `getopt_long` loop does. `prog` is the error prefix (the command's last
/// word, e.g. `add`).
pub fn parse_command(prog: &str, params: &[Param], argv: &[Vec<u8>]) -> Result<Parsed, ParseError> {
    let argv = &argv[..argv.len().min(MAX_ARGS)];
    let mut parsed = Parsed::default();
    let mut positionals: Vec<Vec<u8>> = Vec::new();
    let mut i = 0;
    while i < argv.len() {
        let arg = &argv[i];
        i += 1;
        if arg.as_slice() == b"--" {
            positionals.extend(argv[i..].iter().cloned());
            break;
        }
        if arg.starts_with(b"--") {
            let body = &arg[2..];
            let (name, inline) = match body.iter().position(|&b| b == b'=') {
                Some(p) => (&body[..p], Some(body[p + 1..].to_vec())),
                None => (body, None),
            };
            let param = find_long(prog, params, name, arg)?;
            match param.kind {
                ParamKind::Bool => {
                    if inline.is_some() {
                        return Err(ParseError(format!(
                            "{prog}: option '--{}' doesn't allow an argument",
                            param.long
                        )));
                    }
                    parsed.values.insert(param.long, Value::Bool);
                }
                ParamKind::Str | ParamKind::Int64 => {
                    let value = match inline {
                        Some(v) => v,
                        None => {
                            let Some(v) = argv.get(i) else {
                                return Err(ParseError(format!(
                                    "{prog}: option '--{}' requires an argument",
                                    param.long
                                )));
                            };
                            i += 1;
                            v.clone()
                        }
                    };
                    store(&mut parsed, param, value);
                }
            }
            continue;
        }
        if arg.len() > 1 && arg[0] == b'-' {
            let mut j = 1;
            while j < arg.len() {
                let c = arg[j];
                j += 1;
                let Some(param) = params.iter().find(|p| p.short == Some(c) && !p.positional)
                else {
                    return Err(invalid_short(prog, c));
                };
                if param.kind == ParamKind::Bool {
                    parsed.values.insert(param.long, Value::Bool);
                    continue;
                }
                let value = short_value(prog, c, arg, &mut j, argv, &mut i)?;
                store(&mut parsed, param, value);
            }
            continue;
        }
        positionals.push(arg.clone());
    }
    let mut rest = positionals.into_iter();
    // Words fill the positional parameters not already set by their long
    // option (`--user alice bob` makes `bob` the tag), in order.
    let unset: Vec<&Param> = params
        .iter()
        .filter(|p| p.positional && !parsed.has(p.long))
        .collect();
    for p in unset {
        match rest.next() {
            Some(v) => store(&mut parsed, p, v),
            None => break,
        }
    }
    let extra: Vec<String> = rest.map(|v| lossy(&v)).collect();
    if !extra.is_empty() {
        return Err(ParseError(format!(
            "Error: Extraneous arguments found: {}",
            extra.join(" ")
        )));
    }
    Ok(parsed)
}

/// glibc's text for an unknown short option letter.
fn invalid_short(prog: &str, c: u8) -> ParseError {
    ParseError(format!("{prog}: invalid option -- '{}'", char::from(c)))
}

/// getopt's rule for the argument of short option `c`, found at
/// `arg[*j - 1]`: the rest of the word (`-aPATH`), else the whole next word
/// `argv[*i]` (`-a PATH`). Moves `*j` to the end of `arg` or `*i` past the
/// word taken; glibc's error text when neither exists.
fn short_value(
    prog: &str,
    c: u8,
    arg: &[u8],
    j: &mut usize,
    argv: &[Vec<u8>],
    i: &mut usize,
) -> Result<Vec<u8>, ParseError> {
    if *j < arg.len() {
        let v = arg[*j..].to_vec();
        *j = arg.len();
        return Ok(v);
    }
    let Some(v) = argv.get(*i) else {
        return Err(ParseError(format!(
            "{prog}: option requires an argument -- '{}'",
            char::from(c)
        )));
    };
    *i += 1;
    Ok(v.clone())
}

fn store(parsed: &mut Parsed, param: &Param, value: Vec<u8>) {
    match param.kind {
        ParamKind::Str => {
            parsed.values.insert(param.long, Value::Str(value));
        }
        ParamKind::Int64 => match str_to_int64(&value) {
            Some(n) => {
                parsed.values.insert(param.long, Value::Int(n));
            }
            None => {
                parsed.values.remove(param.long);
            }
        },
        ParamKind::Bool => {
            parsed.values.insert(param.long, Value::Bool);
        }
    }
}

fn find_long<'p>(
    prog: &str,
    params: &'p [Param],
    name: &[u8],
    arg: &[u8],
) -> Result<&'p Param, ParseError> {
    if let Some(p) = params.iter().find(|p| p.long.as_bytes() == name) {
        return Ok(p);
    }
    let candidates: Vec<&Param> = params
        .iter()
        .filter(|p| !name.is_empty() && p.long.as_bytes().starts_with(name))
        .collect();
    match candidates.as_slice() {
        [one] => Ok(one),
        [] => Err(ParseError(format!(
            "{prog}: unrecognized option '{}'",
            lossy(arg)
        ))),
        many => {
            let list: Vec<String> = many.iter().map(|p| format!(" '--{}'", p.long)).collect();
            Err(ParseError(format!(
                "{prog}: option '--{}' is ambiguous; possibilities:{}",
                lossy(name),
                list.concat()
            )))
        }
    }
}

/// The global options before the command word (`doveadm [-Dv] [-f fmt]
/// [-c config] [-o k=v] …`).
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Global {
    /// `-D`.
    pub debug: bool,
    /// `-v`.
    pub verbose: bool,
    /// `-f NAME`, when given (matters: some commands print differently by default).
    pub formatter: Option<Vec<u8>>,
    /// `-c FILE`.
    pub config: Option<Vec<u8>>,
    /// `-o k=v`, in order.
    pub overrides: Vec<Vec<u8>>,
}

/// Parses the global options; returns them and the index of the first
/// non-option word. Errors are full stderr lines (exit code 89).
pub fn parse_global(argv: &[Vec<u8>]) -> Result<(Global, usize), ParseError> {
    let argv = &argv[..argv.len().min(MAX_ARGS)];
    let mut g = Global::default();
    let mut i = 0;
    while i < argv.len() {
        let arg = &argv[i];
        if arg.as_slice() == b"--" {
            return Ok((g, i + 1));
        }
        if arg.len() < 2 || arg[0] != b'-' {
            break;
        }
        i += 1;
        let mut j = 1;
        while j < arg.len() {
            let c = arg[j];
            j += 1;
            match c {
                b'D' => g.debug = true,
                b'v' => g.verbose = true,
                b'f' | b'c' | b'o' | b'i' | b'b' | b'O' => {
                    let value = short_value("doveadm", c, arg, &mut j, argv, &mut i)?;
                    match c {
                        b'f' => g.formatter = Some(value),
                        b'c' => g.config = Some(value),
                        b'o' => g.overrides.push(value),
                        // -i (instance), -b, -O: accepted and ignored here.
                        _ => {}
                    }
                }
                _ => return Err(invalid_short("doveadm", c)),
            }
        }
    }
    Ok((g, i))
}

#[cfg(test)]
mod tests {
    use super::*;

    const MAP: &[Param] = &[
        Param::opt(b'a', "socket-path"),
        Param::opt(b'f', "users-file"),
        Param::flag(b'h', "hash-map"),
        Param::flag(b'u', "user-map"),
        Param::pos("host"),
    ];

    fn v(args: &[&str]) -> Vec<Vec<u8>> {
        args.iter().map(|a| a.as_bytes().to_vec()).collect()
    }

    #[test]
    fn permutes_and_assigns_positionals() {
        let p = parse_command("map", MAP, &v(&["x", "-a", "/s", "-h"])).expect("must parse");
        assert_eq!(p.str("host"), Some(&b"x"[..]));
        assert_eq!(p.str("socket-path"), Some(&b"/s"[..]));
        assert!(p.flag("hash-map"));
        let st = [
            Param::opt(b'a', "socket-path"),
            Param::pos("user"),
            Param::pos("tag"),
        ];
        let p = parse_command("status", &st, &v(&["alice", "--user", "bob"])).expect("must parse");
        assert_eq!(
            (p.str("user"), p.str("tag")),
            (Some(&b"bob"[..]), Some(&b"alice"[..]))
        );
    }

    #[test]
    fn glibc_error_texts() {
        let e = |a: &[&str]| parse_command("map", MAP, &v(a)).expect_err("must fail").0;
        assert_eq!(
            e(&["--h", "x"]),
            "map: option '--h' is ambiguous; possibilities: '--hash-map' '--host'"
        );
        assert_eq!(
            e(&["--user-map=x"]),
            "map: option '--user-map' doesn't allow an argument"
        );
        assert_eq!(e(&["-x"]), "map: invalid option -- 'x'");
        assert_eq!(e(&["-a"]), "map: option requires an argument -- 'a'");
        assert_eq!(
            e(&["--users-file"]),
            "map: option '--users-file' requires an argument"
        );
        assert_eq!(e(&["--foo=1"]), "map: unrecognized option '--foo=1'");
        assert_eq!(
            e(&["a", "b", "c"]),
            "Error: Extraneous arguments found: b c"
        );
    }

    #[test]
    fn int64_rules() {
        assert_eq!(str_to_int64(b"007"), Some(7));
        assert_eq!(str_to_int64(b"-1"), Some(-1));
        assert_eq!(str_to_int64(b"+5"), None);
        assert_eq!(str_to_int64(b" 5"), None);
        assert_eq!(str_to_int64(b"9223372036854775807"), Some(i64::MAX));
        assert_eq!(str_to_int64(b"99999999999999999999"), None);
        assert_eq!(str_to_int64(b""), None);
    }

    #[test]
    fn global_options() {
        let (g, i) =
            parse_global(&v(&["-vD", "-ftab", "-c", "/x", "director", "-v"])).expect("must parse");
        assert!(g.verbose && g.debug);
        assert_eq!(g.formatter.as_deref(), Some(&b"tab"[..]));
        assert_eq!(i, 4);
        assert_eq!(
            parse_global(&v(&["-x"])).expect_err("must fail").0,
            "doveadm: invalid option -- 'x'"
        );
        assert_eq!(
            parse_global(&v(&["-f"])).expect_err("must fail").0,
            "doveadm: option requires an argument -- 'f'"
        );
    }
}
