//! The devices of one process: their sums, in rank order.

use std::any::Any;
use std::sync::{Condvar, Mutex};

use burn::tensor::Tensor;
use burn::tensor::backend::Backend;

use crate::{Error, Result};

/// The devices of one data-parallel run in this process. A sum waits for every device's value
/// and adds them in rank order on the first device, so it gives the same bits on every run
/// whichever device comes first, and every device gets those bits. (burn-collective's local
/// all-reduce adds in the iteration order of a `HashMap` with a random hasher: from three
/// devices on, the rounding of every sum was drawn anew on each run.) Each run has its own
/// group, so runs at once in one process cannot mix their values.
#[derive(Debug)]
pub(crate) struct LocalGroup {
    world: usize,
    state: Mutex<GroupState>,
    changed: Condvar,
}

/// Every device of a run sums tensors of the one training backend; anything else is a bug.
const MIXED_TYPES: &str = "devices of one run summed tensors of different types";

#[derive(Default)]
struct GroupState {
    /// The values of the sum in progress, by device (`Tensor<B, 1>`s of the training backend).
    values: Vec<Option<Box<dyn Any + Send>>>,
    /// The last completed sum (or why it failed), until every device has taken it.
    total: Option<std::result::Result<Box<dyn Any + Send>, String>>,
    /// Devices yet to take `total`.
    takers: usize,
    /// Sums completed: a device waits for this to move past the sum it joined.
    round: u64,
    /// The first device that stopped early: every sum ends with an error from then on.
    failed: Option<usize>,
    /// A device that finished its run: a sum started after it can never complete.
    finished: Option<usize>,
}

impl std::fmt::Debug for GroupState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GroupState").field("round", &self.round).field("failed", &self.failed).finish()
    }
}

impl LocalGroup {
    pub(crate) fn new(world: usize) -> Self {
        let state = GroupState { values: (0..world).map(|_| None).collect(), ..Default::default() };
        Self { world, state: Mutex::new(state), changed: Condvar::new() }
    }

    /// The sum over the group's devices of `value` (device `local`'s), on `value`'s device.
    pub(crate) fn sum<B: Backend>(&self, local: usize, value: Tensor<B, 1>) -> Result<Tensor<B, 1>> {
        let device = value.device();
        let ended = |state: &GroupState| match (state.failed, state.finished) {
            (Some(failed), _) => Some(Error::Invalid(format!("training device {failed} stopped; the run ends"))),
            (None, Some(done)) => {
                Some(Error::Invalid(format!("training device {done} finished its run while device {local} still sums")))
            }
            (None, None) => None,
        };
        let mut state = self.state.lock().unwrap_or_else(|e| e.into_inner());
        // A device that has taken the last sum may be back before the others took it.
        while state.takers > 0 && ended(&state).is_none() {
            state = self.changed.wait(state).unwrap_or_else(|e| e.into_inner());
        }
        if let Some(e) = ended(&state) {
            return Err(e);
        }
        if local >= self.world || state.values[local].is_some() {
            return Err(Error::Invalid(format!("device {local} joined a sum of {} devices twice", self.world)));
        }
        let round = state.round;
        state.values[local] = Some(Box::new(value));
        if state.values.iter().all(Option::is_some) {
            let values: Vec<_> = state.values.iter_mut().filter_map(Option::take).collect();
            state.total = Some(Self::add::<B>(values));
            state.takers = self.world;
            state.round += 1;
            self.changed.notify_all();
        }
        while state.round == round && ended(&state).is_none() {
            state = self.changed.wait(state).unwrap_or_else(|e| e.into_inner());
        }
        if state.round == round {
            // Ended before every device joined: `ended` says why.
            return Err(ended(&state).unwrap_or_else(|| Error::Invalid("a sum ended unfinished".into())));
        }
        let total = match &state.total {
            Some(Ok(total)) => total.downcast_ref::<Tensor<B, 1>>().cloned().ok_or_else(|| MIXED_TYPES.to_string()),
            Some(Err(e)) => Err(e.clone()),
            None => Err("a sum's result was taken too early".to_string()),
        };
        state.takers -= 1;
        if state.takers == 0 {
            state.total = None;
            self.changed.notify_all();
        }
        drop(state);
        Ok(total.map_err(Error::Invalid)?.to_device(&device))
    }

    /// `values` (by device) added in that order on the first one's device.
    fn add<B: Backend>(values: Vec<Box<dyn Any + Send>>) -> std::result::Result<Box<dyn Any + Send>, String> {
        let mut values = values.into_iter().map(|v| v.downcast::<Tensor<B, 1>>().map(|t| *t));
        let Some(Ok(mut total)) = values.next() else {
            return Err(MIXED_TYPES.into());
        };
        let device = total.device();
        for value in values {
            let value = value.map_err(|_| MIXED_TYPES.to_string())?;
            if value.dims() != total.dims() {
                return Err(format!("devices summed {} and {} values", total.dims()[0], value.dims()[0]));
            }
            total = total + value.to_device(&device);
        }
        Ok(Box::new(total))
    }

    /// Device `local` leaves the group: stopped early (`done` false), every sum ends with an
    /// error naming it; finished, every sum that could only complete with it does.
    fn leave(&self, local: usize, done: bool) {
        let mut state = self.state.lock().unwrap_or_else(|e| e.into_inner());
        if done {
            state.finished.get_or_insert(local);
        } else {
            state.failed.get_or_insert(local);
        }
        self.changed.notify_all();
    }

    /// The first device that stopped early, if any.
    pub(super) fn failed(&self) -> Option<usize> {
        self.state.lock().unwrap_or_else(|e| e.into_inner()).failed
    }
}

/// A device's membership of a [`LocalGroup`]: dropped before `done` (an error returned, or a
/// panic unwinding), it stops the group; after, it leaves it. Either way no device waits
/// forever for a sum it cannot join.
pub(super) struct Member<'a> {
    pub(super) group: &'a LocalGroup,
    pub(super) local: usize,
    pub(super) done: bool,
}

impl Drop for Member<'_> {
    fn drop(&mut self) {
        self.group.leave(self.local, self.done);
    }
}
