//! A small regular-expression engine for the PTB tokenizer's rules ([`super::ptb`]).
//!
//! Stanford's tokenizer is a JFlex scanner: at each position every rule is tried, the longest
//! match wins (trailing context included), and a tie goes to the earlier rule. To reproduce that
//! we need, for one rule, *every* length it can match, not the leftmost-first match a backtracking
//! engine gives; so a pattern is evaluated on a set of start positions and yields the set of end
//! positions (a Thompson simulation over the pattern tree). Captions are short, so sorted vectors
//! of positions are plenty. Literals are case-insensitive (the scanner is `%caseless`, which
//! applies to literals only, not to character classes); all our literals are ASCII.
use std::sync::Arc;

type Pred = Arc<dyn Fn(char) -> bool + Send + Sync>;

thread_local! {
    static POOL: std::cell::RefCell<Vec<Vec<usize>>> = const { std::cell::RefCell::new(Vec::new()) };
}
fn take() -> Vec<usize> {
    POOL.with(|p| p.borrow_mut().pop()).unwrap_or_default()
}
fn give(mut v: Vec<usize>) {
    v.clear();
    POOL.with(|p| p.borrow_mut().push(v));
}

#[derive(Clone)]
pub(super) enum Re {
    /// One character satisfying the predicate (a character class, never case-folded).
    Class(Pred),
    /// An ASCII literal, matched ignoring ASCII case.
    Lit(&'static str),
    /// Alternative literals (abbreviation lists), checked in one pass.
    Lits(Vec<&'static str>),
    Seq(Vec<Re>),
    Alt(Vec<Re>),
    /// `min..=max` repetitions (`usize::MAX`: unbounded).
    Rep(Box<Re>, usize, usize),
}

/// A character class from a predicate.
pub(super) fn class(f: impl Fn(char) -> bool + Send + Sync + 'static) -> Re {
    Re::Class(Arc::new(f))
}
/// One of the listed characters (exact case).
pub(super) fn one_of(chars: &'static str) -> Re {
    class(move |c| chars.contains(c))
}
/// Any character but the listed ones.
pub(super) fn none_of(chars: &'static str) -> Re {
    class(move |c| !chars.contains(c))
}
/// One character with this exact case (a one-character class such as `[A]`).
pub(super) fn exact(ch: char) -> Re {
    class(move |c| c == ch)
}
/// A caseless literal.
pub(super) fn lit(s: &'static str) -> Re {
    debug_assert!(s.is_ascii());
    Re::Lit(s)
}
/// Caseless alternatives, e.g. an abbreviation list `"Jan|Feb|Mar"`.
pub(super) fn words(list: &'static str) -> Re {
    alt_of(list.split('|').map(lit).collect())
}
pub(super) fn seq<const N: usize>(parts: [Re; N]) -> Re {
    Re::Seq(parts.into())
}
pub(super) fn alt<const N: usize>(parts: [Re; N]) -> Re {
    alt_of(parts.into())
}
/// Alternatives, nested ones flattened and the literals among them gathered into one [`Re::Lits`]
/// (the same language; the abbreviation lists were most of the scanning time).
pub(super) fn alt_of(parts: Vec<Re>) -> Re {
    let (mut lits, mut rest) = (Vec::new(), Vec::new());
    let mut stack = parts;
    stack.reverse();
    while let Some(r) = stack.pop() {
        match r {
            Re::Alt(inner) => stack.extend(inner.into_iter().rev()),
            Re::Lit(l) => lits.push(l),
            Re::Lits(ls) => lits.extend(ls),
            r => rest.push(r),
        }
    }
    if !lits.is_empty() {
        rest.push(if lits.len() == 1 { Re::Lit(lits[0]) } else { Re::Lits(lits) });
    }
    if rest.len() == 1 {
        rest.pop().unwrap()
    } else {
        Re::Alt(rest)
    }
}
fn lit_at(s: &[char], p: usize, l: &str) -> bool {
    p + l.len() <= s.len() && l.chars().zip(&s[p..]).all(|(a, &b)| a.eq_ignore_ascii_case(&b))
}

impl Re {
    pub(super) fn opt(self) -> Re {
        self.rep(0, 1)
    }
    pub(super) fn star(self) -> Re {
        self.rep(0, usize::MAX)
    }
    pub(super) fn plus(self) -> Re {
        self.rep(1, usize::MAX)
    }
    pub(super) fn rep(self, min: usize, max: usize) -> Re {
        Re::Rep(Box::new(self), min, max)
    }

    /// The positions where a match starting at one of `from` (sorted, distinct) can end; sorted,
    /// distinct.
    pub(super) fn ends(&self, s: &[char], from: &[usize]) -> Vec<usize> {
        let mut out = Vec::new();
        self.ends_into(s, from, &mut out);
        out
    }

    /// [`Re::ends`] into `out` (empty on entry). The intermediate sets live in a per-thread pool
    /// of vectors: the scanner runs every rule at every token, and allocation dominated.
    fn ends_into(&self, s: &[char], from: &[usize], out: &mut Vec<usize>) {
        debug_assert!(out.is_empty());
        match self {
            Re::Class(f) => out.extend(from.iter().filter(|&&p| p < s.len() && f(s[p])).map(|p| p + 1)),
            Re::Lit(l) => out.extend(from.iter().filter(|&&p| lit_at(s, p, l)).map(|p| p + l.len())),
            Re::Lits(ls) => {
                for &p in from {
                    out.extend(ls.iter().filter(|l| lit_at(s, p, l)).map(|l| p + l.len()));
                }
                out.sort_unstable();
                out.dedup();
            }
            Re::Seq(parts) => {
                let mut cur = take();
                cur.extend_from_slice(from);
                for r in parts {
                    if cur.is_empty() {
                        break;
                    }
                    let mut next = take();
                    r.ends_into(s, &cur, &mut next);
                    give(std::mem::replace(&mut cur, next));
                }
                out.extend_from_slice(&cur);
                give(cur);
            }
            Re::Alt(parts) => {
                let mut one = take();
                for r in parts {
                    r.ends_into(s, from, &mut one);
                    out.extend_from_slice(&one);
                    one.clear();
                }
                give(one);
                out.sort_unstable();
                out.dedup();
            }
            Re::Rep(r, min, max) if matches!(**r, Re::Class(_)) => {
                // a run of one class (most repetitions): every length from min to the run's length
                let Re::Class(f) = &**r else { unreachable!() };
                for &p in from {
                    let run = s[p..].iter().take(*max).take_while(|&&c| f(c)).count();
                    if run >= *min {
                        out.extend(p + min..=p + run);
                    }
                }
                if from.len() > 1 {
                    out.sort_unstable();
                    out.dedup();
                }
            }
            Re::Rep(r, min, max) => {
                let mut cur = take();
                cur.extend_from_slice(from);
                for _ in 0..*min {
                    if cur.is_empty() {
                        break;
                    }
                    let mut next = take();
                    r.ends_into(s, &cur, &mut next);
                    give(std::mem::replace(&mut cur, next));
                }
                // a position reached again after more repetitions has no more futures than the
                // first time (fewer repetitions left), so only new positions are iterated: this
                // terminates and is exact
                out.extend_from_slice(&cur);
                let mut k = *min;
                let mut next = take();
                while k < *max && !cur.is_empty() {
                    r.ends_into(s, &cur, &mut next);
                    next.retain(|p| out.binary_search(p).is_err());
                    out.extend_from_slice(&next);
                    out.sort_unstable();
                    std::mem::swap(&mut cur, &mut next);
                    next.clear();
                    k += 1;
                }
                give(cur);
                give(next);
            }
        }
    }

    /// Whether the pattern matches the empty string.
    fn nullable(&self) -> bool {
        match self {
            Re::Class(_) => false,
            Re::Lit(l) => l.is_empty(),
            Re::Lits(ls) => ls.iter().any(|l| l.is_empty()),
            Re::Seq(parts) => parts.iter().all(Re::nullable),
            Re::Alt(parts) => parts.iter().any(Re::nullable),
            Re::Rep(r, min, _) => *min == 0 || r.nullable(),
        }
    }

    /// Whether a non-empty match can start with `c` (a quick filter before [`Re::ends`]).
    pub(super) fn can_start(&self, c: char) -> bool {
        match self {
            Re::Class(f) => f(c),
            Re::Lit(l) => l.chars().next().is_some_and(|a| a.eq_ignore_ascii_case(&c)),
            Re::Lits(ls) => ls.iter().any(|l| l.chars().next().is_some_and(|a| a.eq_ignore_ascii_case(&c))),
            Re::Seq(parts) => {
                for r in parts {
                    if r.can_start(c) {
                        return true;
                    }
                    if !r.nullable() {
                        return false;
                    }
                }
                false
            }
            Re::Alt(parts) => parts.iter().any(|r| r.can_start(c)),
            Re::Rep(r, _, _) => r.can_start(c),
        }
    }

    /// The longest match at `at`, as its end (None: no non-empty match).
    pub(super) fn longest(&self, s: &[char], at: usize) -> Option<usize> {
        self.ends(s, &[at]).last().copied().filter(|&e| e > at)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn chars(s: &str) -> Vec<char> {
        s.chars().collect()
    }

    #[test]
    fn all_ends_not_leftmost_first() {
        let s = chars("aaab");
        // (a|aa)* b? : every prefix of a's, and the b
        let r = seq([alt([lit("a"), lit("aa")]).star(), lit("b").opt()]);
        assert_eq!(r.ends(&s, &[0]), vec![0, 1, 2, 3, 4]);
        assert_eq!(r.longest(&s, 0), Some(4));
        // bounded repetition counts
        assert_eq!(lit("a").rep(2, 3).ends(&s, &[0]), vec![2, 3]);
        assert_eq!(lit("a").rep(2, 2).ends(&s, &[0, 1, 2]), vec![2, 3]);
        // literals are caseless, classes are not
        let s = chars("AbC");
        assert_eq!(lit("abc").longest(&s, 0), Some(3));
        assert_eq!(seq([exact('a'), lit("bc")]).longest(&s, 0), None);
        assert_eq!(seq([one_of("A"), lit("BC")]).longest(&s, 0), Some(3));
        assert_eq!(none_of("x").plus().longest(&s, 1), Some(3));
        assert_eq!(words("x|ab|a").ends(&s, &[0]), vec![1, 2]);
        assert!(matches!(alt([words("x|ab"), alt([lit("a"), exact('b')])]), Re::Alt(v) if v.len() == 2));
        // runs of one class, from several starts
        let s = chars("aab-ab");
        assert_eq!(one_of("ab").rep(2, 3).ends(&s, &[0, 1, 4, 5]), vec![2, 3, 6]);
        assert_eq!(one_of("ab").star().ends(&s, &[3]), vec![3]);
        assert_eq!(one_of("ab").plus().ends(&s, &[4]), vec![5, 6]);
        // the first-character filter
        assert!(seq([lit("x").opt(), one_of("ab")]).can_start('a') && seq([lit("x").opt(), one_of("ab")]).can_start('X'));
        assert!(!seq([lit("x"), one_of("ab")]).can_start('a'));
    }
}
