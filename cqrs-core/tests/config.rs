//! The configuration through the public API: defaults, environment variables, the builder,
//! URL parsing and error reporting.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::HashMap;
use std::time::Duration;

use cqrs_core::{AmqpUrl, Config, Error, QueueType};

const SECRET: &str = "s3cr3t-p4ss";

fn from_vars(vars: &[(&str, &str)]) -> cqrs_core::Result<Config> {
    let map: HashMap<String, String> = vars
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    Config::from_lookup(|name| map.get(name).cloned())
}

/// The `setting` and `reason` of a configuration error; panics on anything else.
fn config_error<T: std::fmt::Debug>(result: cqrs_core::Result<T>) -> (&'static str, String) {
    match result {
        Err(Error::Config { setting, reason }) => (setting, reason),
        other => panic!("expected Error::Config, got {other:?}"),
    }
}

/// Asserts that `vars` fail on `setting`, with a reason quoting `value`.
fn assert_rejected(vars: &[(&str, &str)], setting: &str, value: &str) {
    let (got, reason) = config_error(from_vars(vars));
    assert_eq!(got, setting, "{vars:?}: {reason}");
    assert!(
        reason.contains(value),
        "{vars:?}: reason does not name `{value}`: {reason}"
    );
}

#[test]
fn every_default_matches_django_cqrs() {
    for config in [Config::builder().build().unwrap(), from_vars(&[]).unwrap()] {
        assert_eq!(config.amqp_urls().len(), 1);
        let url = &config.amqp_urls()[0];
        assert!(!url.scheme_is_tls());
        assert_eq!(url.host(), "localhost");
        assert_eq!(url.port(), 5672);
        assert_eq!(url.vhost(), "/");
        assert_eq!(url.username(), "guest");
        assert_eq!(url.to_lapin().authority.userinfo.password, "guest");
        assert_eq!(config.exchange(), "cqrs");
        assert_eq!(config.queue(), None);
        assert_eq!(config.dead_letter_queue(), None);
        assert_eq!(config.queue_type(), QueueType::Classic);
        assert_eq!(config.message_ttl(), Some(Duration::from_secs(86_400)));
        assert_eq!(
            config.dead_message_ttl(),
            Some(Duration::from_secs(864_000))
        );
        assert_eq!(config.delay_queue_max_size(), 1000);
        assert_eq!(config.prefetch(), 1001);
        assert_eq!(config.max_retries(), Some(30));
        assert_eq!(config.retry_delay(), Duration::from_secs(2));
        assert!(!config.retry_exponential());
        assert_eq!(config.retry_max_delay(), Duration::from_secs(300));
        assert_eq!(config.publish_confirm_window(), 1000);
        assert_eq!(config.connect_timeout(), Duration::from_secs(10));
        assert_eq!(config.reconnect_min_delay(), Duration::from_millis(100));
        assert_eq!(config.reconnect_max_delay(), Duration::from_secs(10));
        assert_eq!(config.connection_name(), "cqrs-diesel");
        assert_eq!(config.max_body_size(), 1_048_576);
    }
}

#[test]
fn default_dead_letter_queue_is_derived_from_the_queue() {
    let config = from_vars(&[("CQRS_QUEUE", "payments_replica")]).unwrap();
    assert_eq!(config.queue(), Some("payments_replica"));
    assert_eq!(
        config.dead_letter_queue(),
        Some("dead_letter_payments_replica")
    );
}

const ALL_VARS: &[(&str, &str)] = &[
    (
        "CQRS_AMQP_URL",
        "amqps://app:pw@rabbit-1:6000/orders?heartbeat=15, amqp://10.0.0.2",
    ),
    ("CQRS_EXCHANGE", "events"),
    ("CQRS_QUEUE", "orders_replica"),
    ("CQRS_DEAD_LETTER_QUEUE", "orders_dlq"),
    ("CQRS_QUEUE_TYPE", "quorum"),
    ("CQRS_MESSAGE_TTL", "1h"),
    ("CQRS_DEAD_MESSAGE_TTL", "none"),
    ("CQRS_DELAY_QUEUE_MAX_SIZE", "50"),
    ("CQRS_PREFETCH", "20"),
    ("CQRS_MAX_RETRIES", "none"),
    ("CQRS_RETRY_DELAY", "500ms"),
    ("CQRS_RETRY_EXPONENTIAL", "yes"),
    ("CQRS_RETRY_MAX_DELAY", "2m"),
    ("CQRS_PUBLISH_CONFIRM_WINDOW", "64"),
    ("CQRS_CONNECT_TIMEOUT", "3"),
    ("CQRS_RECONNECT_MIN_DELAY", "250ms"),
    ("CQRS_RECONNECT_MAX_DELAY", "30s"),
    ("CQRS_CONNECTION_NAME", "orders-service"),
    ("CQRS_MAX_BODY_SIZE", "65536"),
];

#[test]
fn from_lookup_reads_every_variable() {
    let config = from_vars(ALL_VARS).unwrap();
    let urls = config.amqp_urls();
    assert_eq!(urls.len(), 2);
    assert!(urls[0].scheme_is_tls());
    assert_eq!(urls[0].username(), "app");
    assert_eq!(urls[0].host(), "rabbit-1");
    assert_eq!(urls[0].port(), 6000);
    assert_eq!(urls[0].vhost(), "orders");
    assert_eq!(urls[0].heartbeat(), Some(15));
    assert_eq!(urls[1].host(), "10.0.0.2");
    assert_eq!(config.exchange(), "events");
    assert_eq!(config.queue(), Some("orders_replica"));
    assert_eq!(config.dead_letter_queue(), Some("orders_dlq"));
    assert_eq!(config.queue_type(), QueueType::Quorum);
    assert_eq!(config.message_ttl(), Some(Duration::from_secs(3600)));
    assert_eq!(config.dead_message_ttl(), None);
    assert_eq!(config.delay_queue_max_size(), 50);
    assert_eq!(config.prefetch(), 20);
    assert_eq!(config.max_retries(), None);
    assert_eq!(config.retry_delay(), Duration::from_millis(500));
    assert!(config.retry_exponential());
    assert_eq!(config.retry_max_delay(), Duration::from_secs(120));
    assert_eq!(config.publish_confirm_window(), 64);
    assert_eq!(config.connect_timeout(), Duration::from_secs(3));
    assert_eq!(config.reconnect_min_delay(), Duration::from_millis(250));
    assert_eq!(config.reconnect_max_delay(), Duration::from_secs(30));
    assert_eq!(config.connection_name(), "orders-service");
    assert_eq!(config.max_body_size(), 65_536);
}

#[test]
fn builder_and_from_lookup_agree() {
    let built = Config::builder()
        .amqp_urls([
            "amqps://app:pw@rabbit-1:6000/orders?heartbeat=15",
            "amqp://10.0.0.2",
        ])
        .exchange("events")
        .queue("orders_replica")
        .dead_letter_queue("orders_dlq")
        .queue_type(QueueType::Quorum)
        .message_ttl(Some(Duration::from_secs(3600)))
        .dead_message_ttl(None)
        .delay_queue_max_size(50)
        .prefetch(20)
        .max_retries(None)
        .retry_delay(Duration::from_millis(500))
        .retry_exponential(true)
        .retry_max_delay(Duration::from_secs(120))
        .publish_confirm_window(64)
        .connect_timeout(Duration::from_secs(3))
        .reconnect_min_delay(Duration::from_millis(250))
        .reconnect_max_delay(Duration::from_secs(30))
        .connection_name("orders-service")
        .max_body_size(65_536)
        .build()
        .unwrap();
    assert_eq!(built, from_vars(ALL_VARS).unwrap());
    assert_eq!(
        Config::builder().queue("q").build().unwrap(),
        from_vars(&[("CQRS_QUEUE", "q")]).unwrap()
    );
}

#[test]
fn a_list_of_urls_is_kept_in_order() {
    let config = from_vars(&[(
        "CQRS_AMQP_URL",
        "amqp://u:p@node-1:5672/%2f,amqp://u:p@node-2:5672/%2f , amqp://u:p@node-3:5673/%2f",
    )])
    .unwrap();
    let hosts: Vec<(&str, u16)> = config
        .amqp_urls()
        .iter()
        .map(|u| (u.host(), u.port()))
        .collect();
    assert_eq!(
        hosts,
        [("node-1", 5672), ("node-2", 5672), ("node-3", 5673)]
    );
    let single = Config::builder()
        .amqp_url("amqp://u:p@node-1:5672/%2f")
        .build()
        .unwrap();
    assert_eq!(single.amqp_urls(), &config.amqp_urls()[..1]);
}

#[test]
fn ipv4_host_is_kept_not_localhost() {
    let url = AmqpUrl::parse("amqp://guest:guest@192.168.7.9:5672/").unwrap();
    assert_eq!(url.host(), "192.168.7.9");
    assert_eq!(url.to_lapin().authority.host, "192.168.7.9");
    let config = from_vars(&[("CQRS_AMQP_URL", "amqp://192.168.7.9")]).unwrap();
    assert_eq!(config.amqp_urls()[0].host(), "192.168.7.9");
}

#[test]
fn vhost_rules_follow_pika() {
    for (input, vhost) in [
        ("amqp://h", "/"),
        ("amqp://h/", "/"),
        ("amqp://h/%2f", "/"),
        ("amqp://h/orders", "orders"),
    ] {
        let url = AmqpUrl::parse(input).unwrap();
        assert_eq!(url.vhost(), vhost, "{input}");
        assert_eq!(url.to_lapin().vhost, vhost, "{input}");
    }
}

#[test]
fn amqps_defaults_to_port_5671() {
    let url: AmqpUrl = "amqps://rabbit.example/".parse().unwrap();
    assert!(url.scheme_is_tls());
    assert_eq!(url.port(), 5671);
    assert_eq!(url.to_lapin().authority.port, 5671);
    assert_eq!(AmqpUrl::parse("amqps://h:443/").unwrap().port(), 443);
}

#[test]
fn bad_scheme_is_a_url_error_with_an_example() {
    let (setting, reason) = config_error(from_vars(&[("CQRS_AMQP_URL", "http://rabbit:5672/")]));
    assert_eq!(setting, "CQRS_AMQP_URL");
    assert!(
        reason.contains("`amqp://`") && reason.contains("`amqps://`"),
        "{reason}"
    );
    assert!(reason.contains("e.g. `amqp://"), "{reason}");
}

#[test]
fn bad_port_is_a_url_error() {
    for url in [
        "amqp://rabbit:99999/",
        "amqp://rabbit:port/",
        "amqp://rabbit:0/",
    ] {
        let (setting, _) = config_error(from_vars(&[("CQRS_AMQP_URL", url)]));
        assert_eq!(setting, "CQRS_AMQP_URL", "{url}");
    }
}

#[test]
fn empty_host_is_a_url_error() {
    for url in ["amqp://", "amqp:///orders", "amqp://user:pw@:5672/"] {
        let (setting, reason) = config_error(Config::builder().amqp_url(url).build());
        assert_eq!(setting, "CQRS_AMQP_URL", "{url}");
        assert!(reason.contains("host"), "{reason}");
    }
}

#[test]
fn unknown_query_param_is_a_url_error_naming_accepted_ones() {
    let (setting, reason) = config_error(from_vars(&[(
        "CQRS_AMQP_URL",
        "amqp://h/?sokcet_timeout=5",
    )]));
    assert_eq!(setting, "CQRS_AMQP_URL");
    assert!(reason.contains("sokcet_timeout"), "{reason}");
    for accepted in [
        "heartbeat",
        "connection_timeout",
        "frame_max",
        "channel_max",
    ] {
        assert!(reason.contains(accepted), "{reason}");
    }
}

#[test]
fn accepted_query_params_reach_lapin() {
    let uri = AmqpUrl::parse(
        "amqp://h/?heartbeat=30&connection_timeout=2500&frame_max=8192&channel_max=16",
    )
    .unwrap()
    .to_lapin();
    assert_eq!(uri.query.heartbeat, Some(30));
    assert_eq!(uri.query.connection_timeout, Some(2500));
    assert_eq!(uri.query.frame_max, Some(8192));
    assert_eq!(uri.query.channel_max, Some(16));
}

#[test]
fn bad_numbers_are_errors_naming_the_setting_and_value() {
    assert_rejected(
        &[("CQRS_DELAY_QUEUE_MAX_SIZE", "lots")],
        "CQRS_DELAY_QUEUE_MAX_SIZE",
        "lots",
    );
    assert_rejected(
        &[("CQRS_DELAY_QUEUE_MAX_SIZE", "0")],
        "CQRS_DELAY_QUEUE_MAX_SIZE",
        "0",
    );
    assert_rejected(&[("CQRS_MAX_RETRIES", "-1")], "CQRS_MAX_RETRIES", "-1");
    assert_rejected(&[("CQRS_MAX_RETRIES", "3.5")], "CQRS_MAX_RETRIES", "3.5");
    assert_rejected(
        &[("CQRS_PUBLISH_CONFIRM_WINDOW", "x")],
        "CQRS_PUBLISH_CONFIRM_WINDOW",
        "x",
    );
    assert_rejected(
        &[("CQRS_PUBLISH_CONFIRM_WINDOW", "0")],
        "CQRS_PUBLISH_CONFIRM_WINDOW",
        "0",
    );
    assert_rejected(
        &[("CQRS_QUEUE_TYPE", "stream")],
        "CQRS_QUEUE_TYPE",
        "stream",
    );
    assert_rejected(
        &[("CQRS_AMQP_URL", "amqp://h/?heartbeat=often")],
        "CQRS_AMQP_URL",
        "often",
    );
}

#[test]
fn prefetch_must_fit_1_to_65535() {
    assert_rejected(&[("CQRS_PREFETCH", "0")], "CQRS_PREFETCH", "0");
    assert_rejected(&[("CQRS_PREFETCH", "70000")], "CQRS_PREFETCH", "70000");
    let (setting, _) = config_error(Config::builder().prefetch(0).build());
    assert_eq!(setting, "CQRS_PREFETCH");
    assert_eq!(from_vars(&[("CQRS_PREFETCH", "1")]).unwrap().prefetch(), 1);
    assert_eq!(
        from_vars(&[("CQRS_PREFETCH", "65535")]).unwrap().prefetch(),
        65535
    );
}

#[test]
fn reconnect_min_delay_above_max_is_an_error() {
    let (setting, _) = config_error(from_vars(&[
        ("CQRS_RECONNECT_MIN_DELAY", "20s"),
        ("CQRS_RECONNECT_MAX_DELAY", "10s"),
    ]));
    assert_eq!(setting, "CQRS_RECONNECT_MIN_DELAY");
    let (setting, _) = config_error(
        Config::builder()
            .reconnect_min_delay(Duration::from_secs(5))
            .reconnect_max_delay(Duration::from_secs(1))
            .build(),
    );
    assert_eq!(setting, "CQRS_RECONNECT_MIN_DELAY");
    let equal = Config::builder()
        .reconnect_min_delay(Duration::from_secs(1))
        .reconnect_max_delay(Duration::from_secs(1))
        .build();
    assert!(equal.is_ok());
}

#[test]
fn none_disables_ttls_and_retry_limit_but_not_other_settings() {
    let config = from_vars(&[
        ("CQRS_MESSAGE_TTL", "none"),
        ("CQRS_DEAD_MESSAGE_TTL", "NONE"),
        ("CQRS_MAX_RETRIES", "None"),
    ])
    .unwrap();
    assert_eq!(config.message_ttl(), None);
    assert_eq!(config.dead_message_ttl(), None);
    assert_eq!(config.max_retries(), None);
    assert_rejected(&[("CQRS_RETRY_DELAY", "none")], "CQRS_RETRY_DELAY", "none");
    assert_rejected(&[("CQRS_PREFETCH", "none")], "CQRS_PREFETCH", "none");
    assert_rejected(
        &[("CQRS_CONNECT_TIMEOUT", "none")],
        "CQRS_CONNECT_TIMEOUT",
        "none",
    );
    // Zero is not a way to say "never": the reason points at `none`.
    let (setting, reason) = config_error(from_vars(&[("CQRS_MESSAGE_TTL", "0")]));
    assert_eq!(setting, "CQRS_MESSAGE_TTL");
    assert!(reason.contains("`none`"), "{reason}");
    let (setting, _) = config_error(from_vars(&[("CQRS_DEAD_MESSAGE_TTL", "0")]));
    assert_eq!(setting, "CQRS_DEAD_MESSAGE_TTL");
}

#[test]
fn bad_booleans_are_errors() {
    for bad in ["maybe", "on", "2"] {
        assert_rejected(
            &[("CQRS_RETRY_EXPONENTIAL", bad)],
            "CQRS_RETRY_EXPONENTIAL",
            bad,
        );
    }
    for (good, expected) in [("TRUE", true), ("1", true), ("no", false), ("False", false)] {
        let config = from_vars(&[("CQRS_RETRY_EXPONENTIAL", good)]).unwrap();
        assert_eq!(config.retry_exponential(), expected, "{good}");
    }
}

#[test]
fn bad_durations_are_errors() {
    for (setting, bad) in [
        ("CQRS_RETRY_DELAY", "2 seconds"),
        ("CQRS_RETRY_DELAY", "1.5s"),
        ("CQRS_RETRY_MAX_DELAY", "-5"),
        ("CQRS_CONNECT_TIMEOUT", "10d"),
        ("CQRS_CONNECT_TIMEOUT", "0"),
        ("CQRS_RECONNECT_MIN_DELAY", "fast"),
        ("CQRS_RECONNECT_MAX_DELAY", "ms"),
        ("CQRS_MESSAGE_TTL", "forever"),
        ("CQRS_DEAD_MESSAGE_TTL", "1y"),
    ] {
        assert_rejected(&[(setting, bad)], setting, bad);
    }
    // The message TTL is whole seconds (`expires` has second precision).
    assert_rejected(
        &[("CQRS_MESSAGE_TTL", "1500ms")],
        "CQRS_MESSAGE_TTL",
        "1500ms",
    );
}

#[test]
fn debug_of_config_never_shows_the_password() {
    let config = from_vars(&[(
        "CQRS_AMQP_URL",
        "amqp://app:s3cr3t-p4ss@rabbit-1/%2f,amqps://app:s3cr3t-p4ss@rabbit-2/orders",
    )])
    .unwrap();
    let debug = format!("{config:?}");
    assert!(!debug.contains(SECRET), "{debug}");
    assert!(
        debug.contains("amqp://app:***@rabbit-1:5672/%2f"),
        "{debug}"
    );
    let pretty = format!("{config:#?}");
    assert!(!pretty.contains(SECRET), "{pretty}");
    let builder = Config::builder().amqp_url("amqp://app:s3cr3t-p4ss@rabbit-1/");
    assert!(!format!("{builder:?}").contains(SECRET));
}

#[test]
fn display_of_url_masks_the_password() {
    let url = AmqpUrl::parse("amqp://guest:s3cr3t-p4ss@127.0.0.1:5672/vhost").unwrap();
    assert_eq!(url.to_string(), "amqp://guest:***@127.0.0.1:5672/vhost");
    assert_eq!(format!("{url:?}"), "amqp://guest:***@127.0.0.1:5672/vhost");
    let root = AmqpUrl::parse("amqp://guest:s3cr3t-p4ss@127.0.0.1/").unwrap();
    assert_eq!(root.to_string(), "amqp://guest:***@127.0.0.1:5672/%2f");
    // The password is still there for the client library.
    assert_eq!(url.to_lapin().authority.userinfo.password, SECRET);
}

#[test]
fn no_error_display_shows_the_password() {
    let bad_urls = [
        "http://guest:s3cr3t-p4ss@rabbit/",
        "guest:s3cr3t-p4ss@rabbit",
        "amqp://guest:s3cr3t-p4ss@rabbit:99999/",
        "amqp://guest:s3cr3t-p4ss@rabbit:port/",
        "amqp://guest:s3cr3t-p4ss@:5672/",
        "amqp://guest:s3cr3t-p4ss@/orders",
        "amqp://guest:s3cr3t-p4ss@[::1/",
        "amqp://guest:s3cr3t-p4ss@rab bit/",
        "amqp://guest:s3cr3t-p4ss@rabbit/?unknown=1",
        "amqp://guest:s3cr3t-p4ss@rabbit/?heartbeat=x",
        "amqp://guest:s3cr3t-p4ss@rabbit/?heartbeat=1&heartbeat=2",
        "amqp://guest:s3cr3t-p4ss@rabbit/#fragment",
        "amqp://guest:s3cr3t-p4ss@rabbit/%ff",
        "amqp://ok,amqp://guest:s3cr3t-p4ss@rabbit:0/",
    ];
    for bad in bad_urls {
        let errors = [
            AmqpUrl::parse(bad).unwrap_err(),
            from_vars(&[("CQRS_AMQP_URL", bad)]).unwrap_err(),
            Config::builder()
                .amqp_urls(bad.split(','))
                .build()
                .unwrap_err(),
        ];
        for error in errors {
            assert!(matches!(
                error,
                Error::Config {
                    setting: "CQRS_AMQP_URL",
                    ..
                }
            ));
            let display = error.to_string();
            assert!(!display.contains(SECRET), "{bad}: {display}");
            assert!(!format!("{error:?}").contains(SECRET), "{bad}: {error:?}");
        }
    }
}

#[test]
fn config_errors_are_not_retryable() {
    let error = from_vars(&[("CQRS_PREFETCH", "0")]).unwrap_err();
    assert!(!error.is_retryable());
}

/// `from_env` reads the real process environment. The variables are set on a child process
/// running this same test binary (setting them here would race with the other tests).
#[test]
fn from_env_reads_the_process_environment() {
    const CHILD: &str = "CQRS_TEST_FROM_ENV_CHILD";
    if std::env::var_os(CHILD).is_some() {
        let config = Config::from_env().unwrap();
        assert_eq!(config.exchange(), "env_exchange");
        assert_eq!(config.queue(), Some("env_queue"));
        assert_eq!(config.dead_letter_queue(), Some("dead_letter_env_queue"));
        assert_eq!(config.max_retries(), Some(7));
        assert_eq!(config.retry_delay(), Duration::from_millis(1500));
        assert_eq!(config.amqp_urls()[0].host(), "10.1.2.3");
        assert_eq!(config.amqp_urls()[0].vhost(), "orders");
        return;
    }
    let child = std::process::Command::new(std::env::current_exe().unwrap())
        .args([
            "--exact",
            "from_env_reads_the_process_environment",
            "--nocapture",
        ])
        .env(CHILD, "1")
        .env(
            "CQRS_AMQP_URL",
            format!("amqp://app:{SECRET}@10.1.2.3:5672/orders"),
        )
        .env("CQRS_EXCHANGE", "env_exchange")
        .env("CQRS_QUEUE", "env_queue")
        .env("CQRS_MAX_RETRIES", "7")
        .env("CQRS_RETRY_DELAY", "1500ms")
        .output()
        .unwrap();
    assert!(
        child.status.success(),
        "the child saw the environment as configured: {}",
        String::from_utf8_lossy(&child.stderr)
    );

    let output = std::process::Command::new(std::env::current_exe().unwrap())
        .args([
            "--exact",
            "from_env_reads_the_process_environment",
            "--nocapture",
        ])
        .env(CHILD, "1")
        .env("CQRS_MAX_RETRIES", "many")
        .output()
        .unwrap();
    assert!(
        !output.status.success(),
        "a bad variable makes from_env fail"
    );
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("CQRS_MAX_RETRIES"), "{stderr}");
}
