//! The finite-state machine of constrained beam search, built as Oscar's
//! `FiniteStateMachineBuilder` (oscar/utils/cbs.py, from nocaps-org/updown-baseline) builds its
//! adjacency tensor fsm[from, to, word], held here as one word set per edge.
//! - Main states 0..2^c: state s has satisfied the constraints whose bits are set in s. Every
//!   main state starts with a self-loop on every word.
//! - Constraint n (bit 1 << n) of tokens t_1..t_m connects every main state `from` without its bit:
//!   t_1 leads to a new sub-state, each next token to the next sub-state, t_m to `from | bit`; in a
//!   sub-state any other word falls back to `from` (the tokens must come consecutively). Each token
//!   is any of its forms (cbs.py's word forms, "dog"/"dogs").
//! - Every connection, the one out of a main state included, also rewrites the self-loop of the
//!   state it leaves to "every word but this token's forms" (cbs.py's `_connect` always gets a
//!   reset state). So a main state's self-loop excludes only the first token of the last
//!   constraint connected from it: in state 0 with constraints A and B, A's first token both
//!   reaches state 1 and stays in state 0. We keep this, since it decides which beams fill which
//!   state; it also means the FSM is nondeterministic (a word can lead to two states).
//! - Nothing stops a constraint from being generated again where it is satisfied: there its
//!   tokens are ordinary self-loop words.
//!
//! cbs.py always builds 2^3 main states and max_words_per_constraint (4) sub-states per main state;
//! with c < 3 constraints the extra states are unreachable from state 0, so we build 2^c main
//! states and only the sub-states used.
use super::bad;
use crate::Result;

/// cbs.py's `max_given_constraints`.
pub const MAX_CONSTRAINTS: usize = 3;
/// cbs.py's `max_words_per_constraint`: longer constraints are cut to their first 4 tokens.
pub const MAX_CONSTRAINT_TOKENS: usize = 4;

/// One constraint (a tag, e.g. "fire hydrant"): tokens to generate consecutively, each given as
/// its alternative forms (cbs.py's word forms: "dog" or "dogs").
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Constraint {
    pub slots: Vec<Vec<u32>>,
}

impl Constraint {
    /// A constraint of these wordpiece ids, one form each.
    pub fn new(ids: &[u32]) -> Constraint {
        Constraint { slots: ids.iter().map(|&w| vec![w]).collect() }
    }
    pub fn with_forms(slots: Vec<Vec<u32>>) -> Constraint {
        Constraint { slots }
    }
}

/// FSM states for one image's constraints (its rows are states × beams).
pub fn cbs_states(constraints: &[Constraint]) -> Result<usize> {
    check_constraints(constraints, None)?;
    Ok(Fsm::new(constraints).states())
}

/// Rows per image for up to `num_constraints` constraints of up to `MAX_CONSTRAINT_TOKENS` tokens:
/// 2^c main states and, for each constraint, (tokens - 1) sub-states from each of the 2^(c-1)
/// main states without it, times `beams` (c = 3: 44 states). `cbs_states` gives the exact number
/// for given constraints.
pub fn cbs_rows(num_constraints: usize, beams: usize) -> usize {
    let c = num_constraints;
    let states = if c == 0 { 1 } else { (1 << c) + c * (1 << (c - 1)) * (MAX_CONSTRAINT_TOKENS - 1) };
    states * beams
}

/// At most 3 constraints, none empty, no token without a form, and (when given) no EOS.
pub(super) fn check_constraints(constraints: &[Constraint], eos: Option<u32>) -> Result<()> {
    const OP: &str = "constrained_beam_search";
    if constraints.len() > MAX_CONSTRAINTS {
        return Err(bad(OP, format!("{} constraints, at most {MAX_CONSTRAINTS}", constraints.len())));
    }
    for (n, c) in constraints.iter().enumerate() {
        if c.slots.is_empty() || c.slots.iter().any(|s| s.is_empty()) {
            return Err(bad(OP, format!("constraint {n} is empty or has a token with no form: {c:?}")));
        }
        // a finished beam is one whose last token is the EOS: it cannot also be a constraint's
        if let Some(eos) = eos.filter(|e| c.slots.iter().flatten().any(|w| w == e)) {
            return Err(bad(OP, format!("constraint {n} holds the EOS {eos}")));
        }
    }
    Ok(())
}

/// The words of one edge: fsm[from, to, :] as a set.
#[derive(Clone, Debug, PartialEq)]
pub(super) enum Words {
    Only(Vec<u32>),
    AllBut(Vec<u32>),
}

impl Words {
    pub(super) fn contains(&self, w: u32) -> bool {
        match self {
            Words::Only(v) => v.contains(&w),
            Words::AllBut(v) => !v.contains(&w),
        }
    }
    /// fsm[.., w] = 1
    fn insert(&mut self, w: u32) {
        match self {
            Words::Only(v) if !v.contains(&w) => v.push(w),
            Words::AllBut(v) => v.retain(|&x| x != w),
            _ => {}
        }
    }
    /// fsm[.., w] = 0
    fn remove(&mut self, w: u32) {
        match self {
            Words::Only(v) => v.retain(|&x| x != w),
            Words::AllBut(v) if !v.contains(&w) => v.push(w),
            _ => {}
        }
    }
}

pub(super) struct Fsm {
    constraints: usize,
    /// edges[from]: (to, words), one entry per target.
    edges: Vec<Vec<(usize, Words)>>,
}

impl Fsm {
    /// Constraints must have been checked (at most 3, none empty); tokens past
    /// `MAX_CONSTRAINT_TOKENS` are dropped, as cbs.py drops them.
    pub(super) fn new(constraints: &[Constraint]) -> Fsm {
        let main = 1usize << constraints.len();
        let mut f = Fsm { constraints: constraints.len(), edges: (0..main).map(|s| vec![(s, Words::AllBut(Vec::new()))]).collect() };
        let mut sub = main;
        for (n, c) in constraints.iter().enumerate() {
            let stride = 1 << n;
            let slots = &c.slots[..c.slots.len().min(MAX_CONSTRAINT_TOKENS)];
            // the main states without bit n: `stride` of them, then `stride` with it, and so on
            let mut from = 0;
            while from < main {
                for _ in 0..stride {
                    let mut word_from = from;
                    for (i, forms) in slots.iter().enumerate() {
                        if i + 1 < slots.len() {
                            f.edges.push(Vec::new());
                            f.connect(word_from, sub, forms, from);
                            word_from = sub;
                            sub += 1;
                        } else {
                            f.connect(word_from, from + stride, forms, from);
                        }
                    }
                    from += 1;
                }
                from += stride;
            }
        }
        f
    }

    /// cbs.py's `_connect(fsm, from, to, word, reset_state=reset)`, step by step.
    fn connect(&mut self, from: usize, to: usize, forms: &[u32], reset: usize) {
        for &w in forms {
            self.words(from, to).insert(w);
            self.words(from, from).remove(w);
        }
        *self.words(from, from) = Words::Only(Vec::new());
        *self.words(from, reset) = Words::AllBut(Vec::new());
        for &w in forms {
            self.words(from, reset).remove(w);
        }
    }

    fn words(&mut self, from: usize, to: usize) -> &mut Words {
        let e = &mut self.edges[from];
        let i = match e.iter().position(|(t, _)| *t == to) {
            Some(i) => i,
            None => {
                e.push((to, Words::Only(Vec::new())));
                e.len() - 1
            }
        };
        &mut e[i].1
    }

    pub(super) fn states(&self) -> usize {
        self.edges.len()
    }

    /// The main states: 2^constraints.
    pub(super) fn main_states(&self) -> usize {
        1 << self.constraints
    }

    /// The edges out of a state (some may hold no word).
    pub(super) fn edges(&self, from: usize) -> &[(usize, Words)] {
        &self.edges[from]
    }

    /// Every state a word leads to from `from`.
    #[cfg(test)]
    pub(super) fn next(&self, from: usize, w: u32) -> Vec<usize> {
        let mut to: Vec<usize> = self.edges[from].iter().filter(|(_, ws)| ws.contains(w)).map(|(t, _)| *t).collect();
        to.sort();
        to
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn transitions_follow_cbs_py() {
        // A = word 10 (or its form 11), B = words 20 21: main states 0..4, B's sub-states 4 (from
        // state 0) and 5 (from state 1)
        let f = Fsm::new(&[Constraint::with_forms(vec![vec![10, 11]]), Constraint::new(&[20, 21])]);
        assert_eq!((f.states(), f.main_states()), (6, 4));
        // state 0: A reaches 1 and, the self-loop being rewritten by B's connection, stays in 0
        assert_eq!((f.next(0, 10), f.next(0, 11)), (vec![0, 1], vec![0, 1]));
        assert_eq!((f.next(0, 20), f.next(0, 21), f.next(0, 7)), (vec![4], vec![0], vec![0]));
        // B's sub-state: its second token completes it, any other word falls back to 0
        assert_eq!((f.next(4, 21), f.next(4, 20), f.next(4, 10), f.next(4, 7)), (vec![2], vec![0], vec![0], vec![0]));
        // state 1 (A done): A's words loop, B's go on from 1
        assert_eq!((f.next(1, 10), f.next(1, 20), f.next(5, 21), f.next(5, 3)), (vec![1], vec![5], vec![3], vec![1]));
        // state 2 (B done): only A was connected from it, so A's words leave and B's loop
        assert_eq!((f.next(2, 10), f.next(2, 20), f.next(2, 7)), (vec![3], vec![2], vec![2]));
        // state 3: everything loops
        for w in [10, 11, 20, 21, 7] {
            assert_eq!(f.next(3, w), vec![3]);
        }
    }

    #[test]
    fn state_counts() {
        let one = |n: usize| Constraint::new(&(0..n as u32).map(|i| 100 + i).collect::<Vec<_>>());
        assert_eq!(Fsm::new(&[]).states(), 1);
        assert_eq!(Fsm::new(&[one(1)]).states(), 2);
        assert_eq!(Fsm::new(&[one(3)]).states(), 2 + 2);
        // 4 main states without each constraint, each with 0, 1 and 3 sub-states
        assert_eq!(Fsm::new(&[one(1), one(2), one(4)]).states(), 8 + 4 * 4);
        // cbs.py keeps 4 tokens of a longer constraint
        assert_eq!(Fsm::new(&[one(6)]).states(), 2 + 3);
        let f = Fsm::new(&[one(6)]);
        let path = [100, 101, 102, 103].iter().fold(vec![0], |s, &w| f.next(s[0], w));
        assert_eq!(path, vec![1]);
    }
}
