use super::*;

fn write(dir: &Path, text: &str) -> PathBuf {
    let p = dir.join("node.toml");
    std::fs::write(&p, text).unwrap();
    p
}

#[test]
fn template_parses_to_the_defaults() {
    let dir = tempfile::tempdir().unwrap();
    let listen: SocketAddr = DEFAULT_LISTEN.parse().unwrap();
    let text = template(&TemplateValues {
        listen,
        public_url: None,
        policy: RegistrationPolicy::Open,
        invites: &[],
    });
    let c = Config::load(&write(dir.path(), &text)).unwrap();
    let mut expected = Config {
        base_dir: dir.path().to_owned(),
        ..Config::default()
    };
    // The one intended difference: a node that listens on loopback may relay to loopback.
    expected.relay.allow_private_destinations = true;
    assert_eq!(c, expected);
}

#[test]
fn only_a_loopback_node_may_relay_to_private_addresses() {
    let dir = tempfile::tempdir().unwrap();
    for (listen, allowed) in [
        ("127.0.0.1:0", true),
        ("0.0.0.0:8440", false),
        ("192.0.2.10:8440", false),
    ] {
        let text = template(&TemplateValues {
            listen: listen.parse().unwrap(),
            public_url: None,
            policy: RegistrationPolicy::Open,
            invites: &[],
        });
        let c = Config::load(&write(dir.path(), &text)).unwrap();
        assert_eq!(c.relay.allow_private_destinations, allowed, "{listen}");
    }
    assert!(
        !Config::default().relay.allow_private_destinations,
        "off unless init or the operator says so"
    );
}

#[test]
fn template_carries_init_values() {
    let dir = tempfile::tempdir().unwrap();
    let url = NodeUrl::parse("http://alpha.test:9000").unwrap();
    let invites = vec!["abc".to_string(), "def".to_string()];
    let text = template(&TemplateValues {
        listen: "127.0.0.1:0".parse().unwrap(),
        public_url: Some(&url),
        policy: RegistrationPolicy::Invite,
        invites: &invites,
    });
    let c = Config::load(&write(dir.path(), &text)).unwrap();
    assert_eq!(c.public_url, Some(url));
    assert_eq!(c.listen.port(), 0);
    assert_eq!(c.registration.policy, RegistrationPolicy::Invite);
    assert_eq!(c.registration.invites, invites);
}

#[test]
fn empty_file_is_all_defaults_and_typos_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let c = Config::load(&write(dir.path(), "")).unwrap();
    assert_eq!(c.relay, RelayConfig::default());
    let err = Config::load(&write(dir.path(), "[relay]\ngive_up_afterr = 3\n")).unwrap_err();
    assert!(err.to_string().contains("give_up_afterr"), "{err}");
    assert!(Config::load(&write(dir.path(), "lisen = \"1.2.3.4:5\"\n")).is_err());
}

#[test]
fn seconds_accept_integers_and_fractions() {
    let dir = tempfile::tempdir().unwrap();
    let c = Config::load(&write(
        dir.path(),
        "[relay]\ngive_up_after = 2\nretry_base = 0.05\n",
    ))
    .unwrap();
    assert_eq!(c.relay.give_up_after.get(), Duration::from_secs(2));
    assert_eq!(c.relay.retry_base.get(), Duration::from_millis(50));
    assert!(Config::load(&write(dir.path(), "[relay]\nretry_base = -1\n")).is_err());
}

#[test]
fn overrides_apply_dotted_keys() {
    let dir = tempfile::tempdir().unwrap();
    let p = write(dir.path(), "listen = \"127.0.0.1:1\"\n");
    let c = Config::load_with(
        &p,
        &[
            "relay.give_up_after=3".into(),
            "listen=127.0.0.1:0".into(),
            "registration.policy=closed".into(),
        ],
    )
    .unwrap();
    assert_eq!(c.relay.give_up_after.get(), Duration::from_secs(3));
    assert_eq!(c.listen.port(), 0);
    assert_eq!(c.registration.policy, RegistrationPolicy::Closed);
    assert!(Config::load_with(&p, &["nonsense".into()]).is_err());
    assert!(Config::load_with(&p, &["relay.nope=1".into()]).is_err());
}

#[test]
fn invalid_values_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    for bad in [
        "[limits]\nmax_envelope = 100\n",
        "[relay]\nretry_base = 10\nretry_max = 1\n",
        "[tls]\ncert = \"c.pem\"\n",
        "[peers]\nblocked = [\"xyz\"]\n",
    ] {
        assert!(Config::load(&write(dir.path(), bad)).is_err(), "{bad}");
    }
}

#[test]
fn hostile_load_limits_are_checked() {
    let dir = tempfile::tempdir().unwrap();
    let ok = Config::load(&write(
        dir.path(),
        "[limits]\ntrusted_proxies = [\"127.0.0.1\", \"10.0.0.0/8\", \"::1\"]\n",
    ))
    .unwrap();
    assert_eq!(ok.limits.trusted_proxies.len(), 3);
    assert!(
        !ok.limits.anonymous_exempt_loopback,
        "the exemption is opt-in"
    );
    for (text, needle) in [
        (
            "[limits]\ntrusted_proxies = [\"proxy.local\"]\n",
            "trusted_proxies",
        ),
        (
            "[limits]\ntrusted_proxies = [\"10.0.0.0/33\"]\n",
            "trusted_proxies",
        ),
        (
            "[limits]\nbody_bytes_in_flight = 1000\n",
            "body_bytes_in_flight",
        ),
        (
            "[limits]\nbody_bytes_in_flight_per_ip = 1000\n",
            "body_bytes_in_flight",
        ),
        (
            "[limits]\nmax_connections_per_ip = 0\n",
            "max_connections_per_ip",
        ),
        (
            "[limits]\nmax_requests_per_connection = 0\n",
            "max_requests_per_connection",
        ),
        ("[limits]\nmax_connection_age = 0\n", "max_connection_age"),
    ] {
        let e = Config::load(&write(dir.path(), text))
            .unwrap_err()
            .to_string();
        assert!(e.contains(needle), "{text}: {e}");
    }
}
