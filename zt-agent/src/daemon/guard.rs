//! The tamper guard: twice a second, every program still attached and every pin in
//! place; what is not is restored, and reported (an event, a metric, a log line).

use std::time::Duration;

use tokio::time::MissedTickBehavior;

use crate::bus::{self, Body, Bus};
use crate::events::TamperEvent;
use crate::metrics::TamperMetrics;
use crate::tamper::{Guard, What};

/// How often the guard looks.
const EVERY: Duration = Duration::from_millis(500);

pub async fn run(guard: &mut Guard, bus: &Bus, metrics: &TamperMetrics) {
    let mut tick = tokio::time::interval(EVERY);
    tick.set_missed_tick_behavior(MissedTickBehavior::Skip);
    loop {
        tick.tick().await;
        for f in guard.check() {
            metrics.total.with_label_values(&[f.what.as_str()]).inc();
            let happened = match f.what {
                What::LinkDetached => format!("{} was detached from its hook", f.object),
                What::LinkPin => format!("the pin of {}'s link was removed or replaced", f.object),
                What::MapPin => format!("the pin of map {} was removed or replaced", f.object),
            };
            let detail = match &f.repaired {
                Ok(()) => {
                    tracing::error!(
                        what = f.what.as_str(),
                        object = f.object,
                        "tamper: {happened}; restored"
                    );
                    format!("{happened}; restored")
                }
                Err(why) => {
                    tracing::error!(what = f.what.as_str(), object = f.object, error = %why, "tamper: {happened}; could not restore it");
                    format!("{happened}; could not restore it: {why}")
                }
            };
            bus.publish(bus::Event::now(Body::Tamper(TamperEvent {
                what: f.what.as_str(),
                detail,
            })));
        }
    }
}
