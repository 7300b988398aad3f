//! Driving a Shoal cluster through [`shoal_client::Client`].

use std::sync::{Mutex, PoisonError};

use bytes::Bytes;
use shoal_client::{CausalContext, Client, ClientError};
use shoal_types::RequestOptions;

use crate::target::{Found, KeyRef, OpError, Target};

/// A Shoal cluster as a [`Target`].
///
/// Updates are what an application that keeps contexts does: each put carries the context of the
/// last read or write of the key that this target saw, so it supersedes the value instead of
/// adding a sibling (a blind put would grow a sibling per update until `TooManySiblings`).
/// Concurrent updates of one key can still make siblings; the next read or write resolves them.
/// An update attempted again (after a timed-out attempt) is sent with the context of its first
/// attempt, as a driver resending a request does.
///
/// The request options' timeout is the coordinator's deadline: `shoal bench` sets it to the
/// attempt timeout when there is one.
#[derive(Debug)]
pub struct ShoalTarget {
    client: Client,
    read: RequestOptions,
    write: RequestOptions,
    /// The last context seen per key number.
    contexts: Vec<Mutex<Option<CausalContext>>>,
}

impl ShoalTarget {
    /// Drives `client` over keys `0..keys`, reading with `read` (R, PR, timeout) and writing
    /// with `write` (W, PW, timeout).
    pub fn new(
        client: Client,
        keys: u64,
        read: RequestOptions,
        write: RequestOptions,
    ) -> ShoalTarget {
        let keys = usize::try_from(keys).unwrap_or(usize::MAX);
        ShoalTarget {
            client,
            read,
            write,
            contexts: (0..keys).map(|_| Mutex::new(None)).collect(),
        }
    }

    /// The client, to close it when done.
    pub fn client(&self) -> &Client {
        &self.client
    }

    fn last_context(&self, number: u64) -> Option<CausalContext> {
        let slot = self.contexts.get(usize::try_from(number).ok()?)?;
        slot.lock().unwrap_or_else(PoisonError::into_inner).clone()
    }

    fn remember(&self, number: u64, context: CausalContext) {
        if let Some(slot) = usize::try_from(number)
            .ok()
            .and_then(|i| self.contexts.get(i))
        {
            *slot.lock().unwrap_or_else(PoisonError::into_inner) = Some(context);
        }
    }
}

impl Target for ShoalTarget {
    type Context = Option<CausalContext>;

    async fn read(&self, key: KeyRef<'_>) -> Result<Found, OpError> {
        let read = self
            .client
            .get_with(key.name, self.read)
            .await
            .map_err(op_error)?;
        let found = if read.is_found() {
            Found::Value
        } else {
            Found::Nothing
        };
        self.remember(key.number, read.context);
        Ok(found)
    }

    fn context(&self, key: KeyRef<'_>) -> Option<CausalContext> {
        self.last_context(key.number)
    }

    async fn update(
        &self,
        key: KeyRef<'_>,
        value: Bytes,
        context: &Option<CausalContext>,
    ) -> Result<(), OpError> {
        let written = self
            .client
            .put_with(key.name, value, context.as_ref(), self.write)
            .await
            .map_err(op_error)?;
        self.remember(key.number, written);
        Ok(())
    }
}

fn op_error(e: ClientError) -> OpError {
    OpError::new(e.kind(), e.to_string())
}
