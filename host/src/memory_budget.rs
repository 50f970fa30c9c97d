//! Which loaded models to unload when their weights outgrow a memory budget: least
//! recently used first, never one that is in use.

use std::collections::HashMap;

/// Default budget for loaded models' weights.
pub const DEFAULT_BUDGET_BYTES: u64 = 8 << 30;

#[derive(Debug)]
pub struct MemoryBudget {
    limit_bytes: u64,
    /// key -> (weight bytes, last use on `clock`)
    loaded: HashMap<String, (u64, u64)>,
    clock: u64,
}

impl MemoryBudget {
    pub fn new(limit_bytes: u64) -> Self {
        MemoryBudget { limit_bytes, loaded: HashMap::new(), clock: 0 }
    }

    pub fn limit_bytes(&self) -> u64 {
        self.limit_bytes
    }

    /// Records a newly loaded model, or a use of a loaded one (`bytes` None).
    pub fn touch(&mut self, key: &str, bytes: Option<u64>) {
        self.clock += 1;
        let clock = self.clock;
        match (self.loaded.get_mut(key), bytes) {
            (Some(entry), _) => entry.1 = clock,
            (None, Some(bytes)) => {
                self.loaded.insert(key.to_string(), (bytes, clock));
            }
            (None, None) => {}
        }
    }

    pub fn remove(&mut self, key: &str) {
        self.loaded.remove(key);
    }

    pub fn used_bytes(&self) -> u64 {
        self.loaded.values().map(|(bytes, _)| bytes).sum()
    }

    /// The models to unload, least recently used first, until the rest fit the budget;
    /// models for which `in_use` is true are skipped (so the rest may still exceed it).
    pub fn over_budget(&self, in_use: impl Fn(&str) -> bool) -> Vec<String> {
        let mut by_age: Vec<(&String, &(u64, u64))> = self.loaded.iter().collect();
        by_age.sort_by_key(|(_, (_, last_use))| *last_use);
        let mut used = self.used_bytes();
        let mut victims = Vec::new();
        for (key, (bytes, _)) in by_age {
            if used <= self.limit_bytes {
                break;
            }
            if !in_use(key) {
                used -= bytes;
                victims.push(key.clone());
            }
        }
        victims
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn evicts_least_recently_used_idle_models_until_within_budget() {
        let mut budget = MemoryBudget::new(100);
        budget.touch("a", Some(40));
        budget.touch("b", Some(40));
        budget.touch("a", None);
        budget.touch("c", Some(40));
        assert_eq!(budget.over_budget(|_| false), vec!["b".to_string()]);
        // b busy: the next oldest idle one goes instead.
        assert_eq!(budget.over_budget(|key| key == "b"), vec!["a".to_string()]);
        assert!(budget.over_budget(|_| true).is_empty());
    }
}
