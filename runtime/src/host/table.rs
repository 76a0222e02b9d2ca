//! A small bounded table of host objects handed to a guest as resource reps.
//! Bounded so that a guest cannot exhaust host memory by opening handles.

use std::collections::HashMap;

pub struct Table<T> {
    items: HashMap<u32, T>,
    next: u32,
    capacity: usize,
}

impl<T> Table<T> {
    pub fn new(capacity: usize) -> Self {
        Self { items: HashMap::new(), next: 1, capacity }
    }

    pub fn push(&mut self, item: T) -> Result<u32, ()> {
        if self.items.len() >= self.capacity {
            return Err(());
        }
        let rep = self.next;
        self.next = self.next.checked_add(1).ok_or(())?;
        self.items.insert(rep, item);
        Ok(rep)
    }

    pub fn get(&self, rep: u32) -> Option<&T> {
        self.items.get(&rep)
    }

    pub fn get_mut(&mut self, rep: u32) -> Option<&mut T> {
        self.items.get_mut(&rep)
    }

    pub fn remove(&mut self, rep: u32) -> Option<T> {
        self.items.remove(&rep)
    }
}
