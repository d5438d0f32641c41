//! The Dovecot config parser, director settings and the printer on arbitrary
//! text. Includes and `<file` reads are possible in principle; the fuzzer's
//! inputs only rarely form them, and reads are size-bounded.
#![no_main]
use director_config::{print_non_default, Config, DirectorSettings, Resolver};
use libfuzzer_sys::fuzz_target;

struct NoDns;
impl Resolver for NoDns {
    fn resolve(&self, _: &str) -> std::io::Result<Vec<std::net::IpAddr>> {
        Err(std::io::Error::new(std::io::ErrorKind::NotFound, "no DNS while fuzzing"))
    }
}

fuzz_target!(|data: &[u8]| {
    let text = String::from_utf8_lossy(data);
    // Keep the fuzzer away from the file system.
    if text.contains("!include") || text.contains('<') {
        return;
    }
    if let Ok(mut config) = Config::parse_str(&text, "fuzz.conf") {
        let _ = DirectorSettings::from_config_with_resolver(&config, &NoDns);
        let _ = print_non_default(&config, "fuzz.conf");
        if let Some(line) = text.lines().next() {
            let _ = config.apply_override(line);
        }
    }
});
