//! Settings sections: each is owned by the module that uses it and
//! derives its own flags (with their environment variables and defaults)
//! through `clap`, so a setting is one field in one struct. A section's
//! `Default` is what its flags say when none is given.

/// The section `T` as its flags' defaults give it, whatever the
/// environment holds.
pub fn defaults<T: clap::Args + clap::FromArgMatches>() -> T {
    let command =
        T::augment_args(clap::Command::new("defaults")).mut_args(|arg| arg.env(None::<&str>));
    let parsed = command
        .try_get_matches_from(["defaults"])
        .and_then(|matches| T::from_arg_matches(&matches));
    match parsed {
        Ok(section) => section,
        // Every flag of a section has a default or is optional; a section
        // that breaks this fails every test that starts a server.
        Err(err) => panic!("a settings section without a default: {err}"),
    }
}

#[cfg(test)]
mod tests {
    use super::defaults;
    use crate::app::LedgerSettings;
    use crate::config::ServerSettings;
    use crate::store::Location;

    #[test]
    fn each_section_defaults_to_what_its_flags_say_whatever_the_environment() {
        // A variable the flag reads must not leak into a default.
        std::env::set_var("IMAGE_LEDGER_SCRUB_RATE", "7");
        let ledger: LedgerSettings = defaults();
        std::env::remove_var("IMAGE_LEDGER_SCRUB_RATE");
        assert_eq!(ledger.scrub_rate, 10_000);
        assert_eq!(ledger.read_side_delay_ms, 5_000);
        assert_eq!(LedgerSettings::default(), ledger);

        let server = ServerSettings::default();
        assert_eq!(server.addr.to_string(), "127.0.0.1:50051");
        assert_eq!(server.max_connections, 4_096);
        assert_eq!(server.max_connections_per_peer, 1_024);
        assert_eq!(server.max_connection_idle().as_secs(), 300);
        assert_eq!(server.max_subscriptions, 10_000);
        assert_eq!(server.max_subscriptions_per_connection, 100);
        assert_eq!(server.page_cache_bytes(), 32 << 20);
        assert_eq!(server.shutdown_grace().as_secs(), 10);
        assert!(!server.insecure_no_auth && !server.new_signing_key);

        let location = Location::dir("/srv/ledger");
        assert_eq!(location.cache_bytes(), 32 << 20);
        assert_eq!(location.database_url, None);
        assert_eq!(location.data_dir.to_str(), Some("/srv/ledger"));
    }
}
