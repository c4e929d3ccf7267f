//! A connection's subscriptions, as a plain list: a dashboard connection
//! holds one, a `/ws` connection at most `ws.max_subscriptions` (100 by
//! default), and a scan of that many is cheaper than a hash table's
//! minimum of four buckets kept for every idle connection.

use crate::channel_name::Channel;
use crate::hub::Subscription;

#[derive(Default)]
pub(super) struct Subscriptions(Vec<(Channel, Subscription)>);

impl Subscriptions {
    pub fn len(&self) -> usize {
        self.0.len()
    }

    pub fn contains_key(&self, channel: &Channel) -> bool {
        self.get(channel).is_some()
    }

    pub fn get(&self, channel: &Channel) -> Option<&Subscription> {
        self.0.iter().find(|(c, _)| c == channel).map(|(_, s)| s)
    }

    /// Replaces (and so ends) an existing subscription to `channel`.
    pub fn insert(&mut self, channel: Channel, sub: Subscription) {
        if let Some(slot) = self.0.iter_mut().find(|(c, _)| *c == channel) {
            slot.1 = sub;
            return;
        }
        // Grow one at a time: most connections never hold more than one.
        self.0.reserve_exact(1);
        self.0.push((channel, sub));
    }

    pub fn remove(&mut self, channel: &Channel) -> Option<Subscription> {
        let i = self.0.iter().position(|(c, _)| c == channel)?;
        Some(self.0.swap_remove(i).1)
    }

    pub fn keys(&self) -> impl Iterator<Item = &Channel> {
        self.0.iter().map(|(c, _)| c)
    }

    pub fn clear(&mut self) {
        self.0 = Vec::new();
    }
}
