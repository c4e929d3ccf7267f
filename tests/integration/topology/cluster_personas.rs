//! Persona ids spread over a Cluster's primaries.

use std::collections::HashMap;

use fred::util::redis_keyslot;

use super::servers::RedisCluster;

/// The slot of a persona's keys and channel (its `{id}` hash tag).
pub fn slot(persona: &str) -> u16 {
    redis_keyslot(format!("pulse:{{{persona}}}:events").as_bytes())
}

/// Persona ids, `per_primary` on each of the 3 primaries, by owner index.
pub fn personas_covering(
    cluster: &RedisCluster,
    per_primary: usize,
) -> HashMap<usize, Vec<String>> {
    let mut by_owner: HashMap<usize, Vec<String>> = HashMap::new();
    for i in 0.. {
        let p = format!("c{i}");
        let owner = cluster.owner(slot(&p)).expect("an owner");
        let list = by_owner.entry(owner).or_default();
        if list.len() < per_primary {
            list.push(p);
        }
        if by_owner.len() == 3 && by_owner.values().all(|l| l.len() == per_primary) {
            return by_owner;
        }
    }
    unreachable!()
}
