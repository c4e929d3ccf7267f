//! The probe: PINGs both connections every `redis.probe_interval`. A Redis
//! that dies closes the sockets and fred reports it at once; one that is
//! frozen (SIGSTOP, a black-holed network) keeps them open, and only an
//! unanswered PING shows it.

use std::time::Duration;

use fred::clients::SubscriberClient;
use fred::prelude::*;
use tokio_util::sync::CancellationToken;

use super::{Health, Signal};

/// PINGs both connections every `interval`, each bounded by `timeout`, and
/// reports the results to the monitor with the links they were sent on.
pub async fn run(
    command: Client,
    subscriber: SubscriberClient,
    health: Health,
    interval: Duration,
    timeout: Duration,
    cancel: CancellationToken,
) {
    let links = health.links();
    let mut tick = tokio::time::interval(interval);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = cancel.cancelled() => return,
            _ = tick.tick() => {}
        }
        let at = *links.borrow();
        let pings = async { tokio::join!(ping(&command, timeout), ping(&subscriber, timeout)) };
        let (command_ok, subscriber_ok) = tokio::select! {
            _ = cancel.cancelled() => return,
            r = pings => r,
        };
        let signal = Signal::Probe {
            at,
            command_ok,
            subscriber_ok,
        };
        if health.report(signal).await.is_err() {
            return;
        }
    }
}

async fn ping<C: ClientLike>(client: &C, timeout: Duration) -> bool {
    matches!(
        tokio::time::timeout(timeout, client.ping::<Value>(None)).await,
        Ok(Ok(_))
    )
}
