//! The config loader: any TOML text parses to a config or to problems
//! that each name a key path; validating a parsed config never panics.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|text: &str| {
    let path = std::path::Path::new("fuzz.toml");
    match seedgate::config::Config::parse(text, path) {
        Ok(config) => {
            let _ = config.validate();
        }
        Err(e) => assert!(!e.to_string().is_empty()),
    }
});
