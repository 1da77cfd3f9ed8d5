//! The event pump: kernel records from the ring buffer, decoded and enriched with what
//! /proc shows of their task while it may still be there, onto the bus.

use std::sync::Arc;

use aya::maps::{MapData, RingBuf};
use tokio::io::unix::AsyncFd;
use tokio::sync::watch;

use crate::bus::{self, Body, Bus};
use crate::events::decode;
use crate::events::provenance::Digests;
use crate::metrics::EventMetrics;
use crate::state::State;

/// Drain the ring buffer until it fails.
pub async fn run(
    events: RingBuf<MapData>,
    state: watch::Receiver<Arc<State>>,
    bus: Bus,
    metrics: EventMetrics,
) -> std::io::Result<()> {
    let malformed = metrics.lost.with_label_values(&["malformed"]);
    // SAFETY: the ring buffer owns its descriptor and outlives the registration: both
    // live in this task.
    let mut ring = unsafe { AsyncFd::register(events) }?;
    let mut digests = Digests::default();
    loop {
        let mut guard = ring.readable_mut().await?;
        let rb = guard.get_inner_mut();
        let mut batch = Vec::new();
        while let Some(item) = rb.next() {
            match decode::parse(&item) {
                Some(ev) => batch.push(ev),
                None => malformed.inc(),
            }
        }
        guard.clear_ready();
        if batch.is_empty() {
            continue;
        }
        let st = state.borrow().clone();
        // Enriching reads /proc and may hash a large binary for an exec event: let the
        // runtime move the other parts (the control socket, the resolver's events) off
        // this worker meanwhile.
        tokio::task::block_in_place(|| {
            for raw in batch {
                match decode::enrich(&raw, &st, &mut digests) {
                    Some(k) => bus.publish(bus::Event::now(Body::Kernel(Box::new(k)))),
                    None => malformed.inc(),
                }
            }
        });
    }
}
