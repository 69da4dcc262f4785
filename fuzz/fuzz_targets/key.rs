//! Key and full-URL normalisation: a key that passes the checks is served
//! from under the base path however the origin decodes it, and has a task
//! id (`seedgate::origin::key::check_escape`). Full URLs go through the
//! same check on the part below the base.
#![no_main]

use libfuzzer_sys::fuzz_target;
use url::Url;

fuzz_target!(|input: (&str, &str)| {
    let (key, prefix) = input;
    for base in [
        "http://origin.example/pub/",
        "http://origin.example/",
        "http://10.0.0.1:8000/a/b/",
    ] {
        let base = Url::parse(base).unwrap();
        seedgate::origin::key::check_escape(&base, key);
        // A full URL under the base: the key is what follows it.
        if let Ok(url) = Url::parse(&format!("{base}{key}"))
            && let Some(rest) = url.as_str().strip_prefix(base.as_str())
        {
            let rest = rest.split(['?', '#']).next().unwrap_or("");
            seedgate::origin::key::check_escape(&base, rest);
        }
    }
    let _ = seedgate::origin::key::check_prefix(prefix);
});
