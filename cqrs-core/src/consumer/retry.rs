//! What happens to a message that failed to apply (docs/WIRE.md, "Failure handling"): another try
//! after a delay, or the dead-letter queue once its retries are used up.

use std::time::Duration;

use super::apply::{ModelPolicy, RetryChoice};
use crate::backoff::Backoff;
use crate::config::Config;

/// The fate of a failed message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum AfterFailure {
    /// Republish it with `retries + 1` after this delay.
    Retry {
        /// How long it waits in the delay queue.
        delay: Duration,
    },
    /// Publish it to the dead-letter queue with this reason.
    DeadLetter {
        /// `failed after N retries: <last error>`.
        reason: String,
    },
}

/// Decides for a message that has been retried `retries` times and failed again with `error`:
/// dead-letter it when `retries + 1` exceeds the model's maximum (the policy's, else the
/// configuration's; none = unlimited), otherwise retry it after the model's delay.
///
/// `choice` (the model's retry hook) overrides either decision: `retry: Some(false)`
/// dead-letters at once (the reason says the model refused), `Some(true)` retries past the
/// maximum; `delay` replaces the computed delay.
/// Whether a message retried `retries` times has used up the model's retries (the policy's
/// maximum, else the configuration's; none = unlimited): what the configured policy answers
/// when it fails again.
pub(crate) fn retries_exhausted(retries: u32, policy: &ModelPolicy, config: &Config) -> bool {
    let max_retries = policy.max_retries.unwrap_or(config.max_retries());
    max_retries.is_some_and(|max| u64::from(retries) + 1 > u64::from(max))
}

pub(crate) fn after_failure(
    retries: u32,
    policy: &ModelPolicy,
    config: &Config,
    error: &str,
    choice: RetryChoice,
) -> AfterFailure {
    let exhausted = retries_exhausted(retries, policy, config);
    match choice.retry {
        Some(false) => {
            return AfterFailure::DeadLetter {
                reason: format!(
                    "not retried (the model's should_retry_cqrs refused) after {retries} \
                     retries: {error}"
                ),
            };
        }
        None if exhausted => {
            return AfterFailure::DeadLetter {
                reason: format!("failed after {retries} retries: {error}"),
            };
        }
        Some(true) | None => {}
    }
    if let Some(delay) = choice.delay {
        return AfterFailure::Retry { delay };
    }
    let delay = retry_delay(
        retries,
        policy.retry_delay.unwrap_or(config.retry_delay()),
        policy
            .retry_exponential
            .unwrap_or(config.retry_exponential()),
        config.retry_max_delay(),
    );
    AfterFailure::Retry { delay }
}

/// The delay before retry number `retries + 1`: `base`; or, when exponential,
/// `base * 2^retries` capped at `max`, with "equal jitter" (a random delay between half of that
/// and all of it), so that messages that failed together do not all come back together.
pub(crate) fn retry_delay(
    retries: u32,
    base: Duration,
    exponential: bool,
    max: Duration,
) -> Duration {
    if !exponential {
        return base;
    }
    let ceiling = Backoff::new(base, max).ceiling(retries);
    let half = ceiling / 2;
    half + (ceiling - half).mul_f64(fastrand::f64())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(max_retries: Option<u32>) -> Config {
        Config::builder()
            .max_retries(max_retries)
            .retry_delay(Duration::from_secs(2))
            .retry_max_delay(Duration::from_secs(60))
            .build()
            .unwrap()
    }

    #[test]
    fn retries_until_the_configured_maximum_then_dead_letters() {
        let config = config(Some(3));
        let policy = ModelPolicy::default();
        for retries in 0..3 {
            assert_eq!(
                after_failure(retries, &policy, &config, "boom", RetryChoice::default()),
                AfterFailure::Retry {
                    delay: Duration::from_secs(2)
                },
                "retry number {}",
                retries + 1
            );
        }
        assert_eq!(
            after_failure(3, &policy, &config, "boom", RetryChoice::default()),
            AfterFailure::DeadLetter {
                reason: "failed after 3 retries: boom".to_owned()
            }
        );
    }

    #[test]
    fn zero_retries_dead_letters_at_the_first_failure_and_none_never_does() {
        let policy = ModelPolicy::default();
        assert!(matches!(
            after_failure(0, &policy, &config(Some(0)), "x", RetryChoice::default()),
            AfterFailure::DeadLetter { .. }
        ));
        assert!(matches!(
            after_failure(
                u32::MAX,
                &policy,
                &config(None),
                "x",
                RetryChoice::default()
            ),
            AfterFailure::Retry { .. }
        ));
    }

    #[test]
    fn the_model_policy_overrides_the_configuration() {
        let config = config(Some(30));
        let policy = ModelPolicy {
            max_retries: Some(Some(1)),
            retry_delay: Some(Duration::from_millis(50)),
            ..ModelPolicy::default()
        };
        assert_eq!(
            after_failure(0, &policy, &config, "x", RetryChoice::default()),
            AfterFailure::Retry {
                delay: Duration::from_millis(50)
            }
        );
        assert!(matches!(
            after_failure(1, &policy, &config, "x", RetryChoice::default()),
            AfterFailure::DeadLetter { .. }
        ));
        let unlimited = ModelPolicy {
            max_retries: Some(None),
            ..ModelPolicy::default()
        };
        assert!(matches!(
            after_failure(1000, &unlimited, &config, "x", RetryChoice::default()),
            AfterFailure::Retry { .. }
        ));
    }

    #[test]
    fn the_model_hook_can_refuse_a_retry_force_one_and_set_the_delay() {
        let config = config(Some(3));
        let policy = ModelPolicy::default();
        let refuse = RetryChoice {
            retry: Some(false),
            delay: None,
        };
        let AfterFailure::DeadLetter { reason } = after_failure(0, &policy, &config, "x", refuse)
        else {
            panic!("refused");
        };
        assert!(reason.contains("should_retry_cqrs refused"), "{reason}");
        let force = RetryChoice {
            retry: Some(true),
            delay: Some(Duration::from_millis(7)),
        };
        assert_eq!(
            after_failure(99, &policy, &config, "x", force),
            AfterFailure::Retry {
                delay: Duration::from_millis(7)
            }
        );
        let delay_only = RetryChoice {
            retry: None,
            delay: Some(Duration::from_secs(9)),
        };
        assert_eq!(
            after_failure(0, &policy, &config, "x", delay_only),
            AfterFailure::Retry {
                delay: Duration::from_secs(9)
            }
        );
        assert!(matches!(
            after_failure(3, &policy, &config, "x", delay_only),
            AfterFailure::DeadLetter { .. }
        ));
    }

    #[test]
    fn exponential_delays_double_with_jitter_up_to_the_cap() {
        let base = Duration::from_millis(100);
        let max = Duration::from_secs(1);
        for retries in 0..40 {
            let ceiling = (base * 2u32.saturating_pow(retries.min(20))).min(max);
            for _ in 0..20 {
                let delay = retry_delay(retries, base, true, max);
                assert!(
                    delay >= ceiling / 2 && delay <= ceiling,
                    "retry {retries}: {delay:?} outside {:?}..={ceiling:?}",
                    ceiling / 2
                );
            }
        }
        assert_eq!(retry_delay(7, base, false, max), base, "constant");
    }

    #[test]
    fn a_policy_can_switch_exponential_on() {
        let config = config(None);
        let policy = ModelPolicy {
            retry_exponential: Some(true),
            ..ModelPolicy::default()
        };
        let AfterFailure::Retry { delay } =
            after_failure(3, &policy, &config, "x", RetryChoice::default())
        else {
            panic!("unlimited retries");
        };
        assert!(
            delay >= Duration::from_secs(8) && delay <= Duration::from_secs(16),
            "{delay:?}"
        );
    }
}
