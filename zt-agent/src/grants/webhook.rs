//! `--approval-webhook URL`: each new request is POSTed there as JSON, off the
//! manager's loop, with a timeout, a bounded body and a bounded number in flight; a
//! webhook that is down or slow costs requests nothing but the notice.

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::Semaphore;

/// POSTs in flight at once; past this a notice is dropped (and logged).
const IN_FLIGHT: usize = 4;
/// The whole exchange, connect included.
const TIMEOUT: Duration = Duration::from_secs(5);

pub struct Webhook {
    url: Option<String>,
    slots: Arc<Semaphore>,
}

impl Webhook {
    #[must_use]
    pub fn new(url: Option<String>) -> Self {
        Self {
            url,
            slots: Arc::new(Semaphore::new(IN_FLIGHT)),
        }
    }

    /// Send `body` to the webhook, if there is one, without waiting for it.
    pub fn post(&self, body: serde_json::Value) {
        let Some(url) = self.url.clone() else { return };
        let Ok(permit) = self.slots.clone().try_acquire_owned() else {
            tracing::warn!(%url, "approval webhook busy; a request notice was dropped");
            return;
        };
        tokio::task::spawn_blocking(move || {
            let _permit = permit;
            let agent: ureq::Agent = ureq::Agent::config_builder()
                .timeout_global(Some(TIMEOUT))
                .http_status_as_error(true)
                .build()
                .into();
            let text = serde_json::to_string(&body).unwrap_or_default();
            match agent
                .post(&url)
                .header("Content-Type", "application/json")
                .send(text.as_bytes())
            {
                Ok(_) => tracing::debug!(%url, "request posted to the approval webhook"),
                Err(e) => tracing::warn!(%url, error = %e, "approval webhook failed"),
            }
        });
    }
}
