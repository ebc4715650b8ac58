//! The config parser on arbitrary text: it may refuse it (naming a line), never panic.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(text) = std::str::from_utf8(data) {
        if let Ok(config) = vmq_broker::Config::parse(text, "fuzz.conf") {
            // Whatever parses must be usable.
            let _ = config.max_packet_size();
            // And each plugin's own lines.
            let _ = vmq_broker::plugins::check(&config);
        }
        // The plugin files have their own parsers.
        let _ = vmq_broker::plugins::acl::Rules::parse(text, std::path::Path::new("fuzz.acl"));
    }
});
