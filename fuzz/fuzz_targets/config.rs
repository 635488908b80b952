//! Hub configuration fuzz target: the text of a `moat.toml` (`moat serve --config`) must give
//! a configuration or an error naming the key, never panic: `Config::from_toml_str`, what
//! `Config::load` runs on the file's text (merge over the embedded defaults, typed decoding,
//! validation), and the error's message.
//!
//! Run: `cargo +nightly fuzz run config fuzz/corpus/config fuzz/seeds/config` from the
//! repository root (new inputs go to the first, ignored directory; the seeds stay as they are).
#![no_main]

use libfuzzer_sys::fuzz_target;
use moat_config::Config;

fuzz_target!(|data: &[u8]| {
    // `load` reads the file as UTF-8 first.
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    if let Err(e) = Config::from_toml_str(text, "moat.toml") {
        let _ = e.to_string();
    }
});
