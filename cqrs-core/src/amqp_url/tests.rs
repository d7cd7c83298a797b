use super::*;

const SECRET: &str = "s3cr3t-p4ss";

fn reason(input: &str) -> String {
    match AmqpUrl::parse(input) {
        Err(Error::Config { setting, reason }) => {
            assert_eq!(setting, "CQRS_AMQP_URL");
            reason
        }
        other => panic!("expected a config error for {input:?}, got {other:?}"),
    }
}

#[test]
fn parses_every_part() {
    let url = AmqpUrl::parse(
        "amqp://us%40er:p%2Fss@rabbit.example:1234/or%2fders?heartbeat=30&connection_timeout=1500&frame_max=131072&channel_max=64",
    )
    .unwrap();
    assert!(!url.scheme_is_tls());
    assert_eq!(url.username(), "us@er");
    assert_eq!(url.password, "p/ss");
    assert_eq!(url.host(), "rabbit.example");
    assert_eq!(url.port(), 1234);
    assert_eq!(url.vhost(), "or/ders");
    assert_eq!(url.heartbeat(), Some(30));
    assert_eq!(url.connection_timeout(), Some(Duration::from_millis(1500)));
    assert_eq!(url.frame_max(), Some(131072));
    assert_eq!(url.channel_max(), Some(64));
}

#[test]
fn defaults_user_password_and_port() {
    let url = AmqpUrl::parse("amqp://localhost").unwrap();
    assert_eq!(url.username(), "guest");
    assert_eq!(url.password, "guest");
    assert_eq!(url.port(), 5672);
    assert_eq!(url.vhost(), "/");
    assert_eq!(url.heartbeat(), None);
    assert_eq!(AmqpUrl::parse("amqps://localhost").unwrap().port(), 5671);
}

#[test]
fn user_without_password_gets_default_password_but_empty_password_stays_empty() {
    assert_eq!(AmqpUrl::parse("amqp://app@h").unwrap().password, "guest");
    let url = AmqpUrl::parse("amqp://app:@h").unwrap();
    assert_eq!(url.username(), "app");
    assert_eq!(url.password, "");
}

#[test]
fn ip_hosts_are_kept() {
    let v4 = AmqpUrl::parse("amqp://10.1.2.3:5673").unwrap();
    assert_eq!(v4.host(), "10.1.2.3");
    #[cfg(feature = "rabbitmq")]
    assert_eq!(v4.to_lapin().authority.host, "10.1.2.3");
    let v6 = AmqpUrl::parse("amqp://[::1]:5673/").unwrap();
    assert_eq!(v6.host(), "::1");
    assert_eq!(v6.port(), 5673);
    assert_eq!(v6.to_string(), "amqp://guest:***@[::1]:5673/%2f");
}

#[test]
fn vhost_follows_pika() {
    for (input, vhost) in [
        ("amqp://h", "/"),
        ("amqp://h/", "/"),
        ("amqp://h/%2f", "/"),
        ("amqp://h/%2F", "/"),
        ("amqp://h/orders", "orders"),
        ("amqp://h/a%2Fb", "a/b"),
        ("amqp://h/a/b", "a/b"),
        ("amqp://h/sp%20ace", "sp ace"),
    ] {
        assert_eq!(AmqpUrl::parse(input).unwrap().vhost(), vhost, "{input}");
    }
}

#[test]
#[cfg(feature = "rabbitmq")]
fn to_lapin_carries_every_field() {
    let uri = AmqpUrl::parse(
        "amqps://u:p@h:1/v?heartbeat=5&connection_timeout=7&frame_max=9&channel_max=11",
    )
    .unwrap()
    .to_lapin();
    assert_eq!(uri.scheme, AMQPScheme::AMQPS);
    assert_eq!(uri.authority.userinfo.username, "u");
    assert_eq!(uri.authority.userinfo.password, "p");
    assert_eq!(uri.authority.host, "h");
    assert_eq!(uri.authority.port, 1);
    assert_eq!(uri.vhost, "v");
    assert_eq!(uri.query.heartbeat, Some(5));
    assert_eq!(uri.query.connection_timeout, Some(7));
    assert_eq!(uri.query.frame_max, Some(9));
    assert_eq!(uri.query.channel_max, Some(11));
    assert_eq!(uri.query.auth_mechanism, None);
}

#[test]
fn display_and_debug_mask_the_password() {
    let url = AmqpUrl::parse(&format!("amqp://guest:{SECRET}@127.0.0.1:5672/vhost")).unwrap();
    assert_eq!(url.to_string(), "amqp://guest:***@127.0.0.1:5672/vhost");
    assert_eq!(format!("{url:?}"), "amqp://guest:***@127.0.0.1:5672/vhost");
    let url = AmqpUrl::parse("amqp://guest:guest@localhost/?heartbeat=10&channel_max=3").unwrap();
    assert_eq!(
        url.to_string(),
        "amqp://guest:***@localhost:5672/%2f?heartbeat=10&channel_max=3"
    );
}

#[test]
fn wrong_scheme_is_rejected_with_example() {
    for input in [
        format!("http://u:{SECRET}@h/"),
        "localhost:5672".to_owned(),
        "rabbit".to_owned(),
    ] {
        let reason = reason(&input);
        assert!(reason.contains("`amqp://`"), "{reason}");
        assert!(reason.contains("`amqps://`"), "{reason}");
        assert!(reason.contains("e.g."), "{reason}");
        assert!(!reason.contains(SECRET), "{reason}");
    }
    assert!(reason("http://h/").contains("`http://`"));
}

#[test]
fn bad_port_is_rejected() {
    for input in [
        "amqp://u:s3cr3t-p4ss@h:99999/",
        "amqp://u:s3cr3t-p4ss@h:abc/",
        "amqp://u:s3cr3t-p4ss@h:0/",
    ] {
        let reason = reason(input);
        assert!(reason.contains("1..=65535"), "{reason}");
        assert!(!reason.contains(SECRET), "{reason}");
    }
}

#[test]
fn empty_host_is_rejected() {
    for input in ["amqp://", "amqp:///vhost", "amqp://u:s3cr3t-p4ss@:5672/"] {
        let reason = reason(input);
        assert!(reason.contains("host"), "{reason}");
        assert!(!reason.contains(SECRET), "{reason}");
    }
}

#[test]
fn pika_only_parameters_of_a_shared_url_are_accepted_and_ignored() {
    let url = AmqpUrl::parse(
        "amqp://u:p@h/%2f?blocked_connection_timeout=300&connection_attempts=3&heartbeat=60",
    )
    .unwrap();
    assert_eq!(url.heartbeat(), Some(60));
    assert_eq!(url.host(), "h");
}

#[test]
fn unknown_query_parameter_names_the_accepted_ones() {
    let reason = reason("amqp://u:s3cr3t-p4ss@h/?heartbeet=3");
    assert!(reason.contains("`heartbeet`"), "{reason}");
    for accepted in [
        "heartbeat",
        "connection_timeout",
        "frame_max",
        "channel_max",
    ] {
        assert!(reason.contains(accepted), "{reason}");
    }
    assert!(reason.contains("amqp://u:***@h:5672/%2f"), "{reason}");
    assert!(!reason.contains(SECRET), "{reason}");
}

#[test]
fn bad_query_values_are_rejected() {
    for input in [
        "amqp://h/?heartbeat=70000",
        "amqp://h/?heartbeat=x",
        "amqp://h/?channel_max=-1",
        "amqp://h/?frame_max=",
        "amqp://h/?connection_timeout=1.5",
        "amqp://h/?heartbeat=1&heartbeat=2",
    ] {
        reason(input);
    }
}

#[test]
fn fragment_and_bad_encoding_are_rejected() {
    assert!(reason("amqp://h/v#x").contains("fragment"));
    assert!(reason("amqp://h/%ff").contains("UTF-8"));
    assert!(reason(&format!("amqp://h/{}", "v".repeat(256))).contains("255"));
}

#[test]
fn errors_never_show_the_password() {
    for input in [
        "ftp://u:s3cr3t-p4ss@h/",
        "amqp://u:s3cr3t-p4ss@h:x/",
        "amqp://u:s3cr3t-p4ss@[::1/",
        "amqp://u:s3cr3t-p4ss@h h/",
        "amqp://u:s3cr3t-p4ss@/",
        "amqp://u:s3cr3t-p4ss@h/#frag",
        "amqp://u:s3cr3t-p4ss@h/?x=1",
        "amqp://u:s3cr3t-p4ss@h/?heartbeat=x",
    ] {
        let err = AmqpUrl::parse(input).unwrap_err();
        assert!(!err.to_string().contains(SECRET), "{err}");
        assert!(!format!("{err:?}").contains(SECRET), "{err:?}");
    }
}

#[test]
fn percent_decode_handles_edge_cases() {
    assert_eq!(percent_decode("a%2fb").as_deref(), Some("a/b"));
    assert_eq!(percent_decode("100%").as_deref(), Some("100%"));
    assert_eq!(percent_decode("%zz%4").as_deref(), Some("%zz%4"));
    assert_eq!(percent_decode("%C3%BC").as_deref(), Some("ü"));
    assert_eq!(percent_decode("%ff"), None);
}

#[test]
fn glued_urls_are_rejected_without_showing_the_second_password() {
    let glued = reason("amqp://ok,amqp://u:s3cr3t-p4ss@h/");
    assert!(
        glued.contains("`,`") && glued.contains("amqp_urls"),
        "{glued}"
    );
    assert!(!glued.contains(SECRET), "{glued}");
    assert!(reason("amqp://a;b/").contains("`;`"));
    assert_eq!(
        AmqpUrl::parse("amqp://my_host-1.example").unwrap().host(),
        "my_host-1.example"
    );
}

#[test]
fn non_ascii_host_is_decoded() {
    assert_eq!(
        AmqpUrl::parse("amqp://ü.example/").unwrap().host(),
        "ü.example"
    );
}

#[test]
fn from_str_equals_parse() {
    let a: AmqpUrl = "amqp://h/v".parse().unwrap();
    assert_eq!(a, AmqpUrl::parse(" amqp://h/v ").unwrap());
}
