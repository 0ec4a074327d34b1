//! PTB tokenisation as the COCO caption evaluation sees it.
//!
//! pycocoevalcap's `PTBTokenizer` writes the captions one per line and runs Stanford CoreNLP
//! 3.4.1's `edu.stanford.nlp.process.PTBTokenizer -preserveLines -lowerCase` on them, then splits
//! each output line on spaces and drops the tokens in its `PUNCTUATIONS` list. That Java tokenizer
//! is a JFlex scanner; this module reimplements its behaviour with the option values that command
//! line gives (PTB3 escaping on, `americanize` off, `splitAssimilations` on, the traditional rather
//! than the strict Treebank-3 state, newlines as tokens): a table of rules tried at every position,
//! the longest match winning, trailing context counted in the length, ties going to the earlier
//! rule ([`super::pattern`] finds every length a rule can match; [`macros`] holds the pieces).
//! It is checked token for token against the jar (`tests/fixtures/caption/ptb_expected.json`,
//! written by `tools/caption_refs.py`, which can also make larger random sets).
//!
//! Consequences worth knowing, all as in pycocoevalcap: `-lowerCase` lower-cases the normalised
//! brackets too, so `-lrb-`/`-rrb-`/`-lsb-`/... are *not* in the (upper-case) punctuation list and
//! stay as words; `?!`, `%`, `&`, `$`, `#`, `/` stay; quotes become `` ` `` / `` `` `` / `'` / `''`
//! and are dropped; dashes of 3-4 hyphens and en/em dashes become `--` and are dropped, other
//! hyphen runs stay; `cannot`, `gonna`, `wanna`... are split (`can not`, `gon na`); `n't` and
//! `'s 're 'll 've 'd 'm` are split off; hyphenated words, numbers with `,` `.` `:`, `x/y`, `a.m.`,
//! listed abbreviations (`mr.`, `st.`, `etc.`) stay whole; fractions like `2 1/2` and phone-like
//! digit groups become one token holding a no-break space.
//!
//! Known differences, none of which an English caption meets: Java's `Character.isLetter` and
//! `isDigit` are approximated from Rust's Unicode tables ([`macros::letter`]), so letters added to
//! Unicode after the jar's tables (e.g. U+037F) count as letters here; lower-casing is Rust's,
//! whose final-sigma rule differs from Java 17's in odd contexts (`c〆Σ`); characters outside the
//! Basic Multilingual Plane are one character here, two UTF-16 units there (both drop emoji); line
//! breaks other than `\n` inside a caption separate tokens (Java starts a new output line, which
//! shifts every later caption in pycocoevalcap). On 20 000 random strings over a wide Unicode
//! alphabet 57 differed, all for the first two reasons; on 50 000 caption-like and ASCII-symbol
//! strings none did.
mod macros;

use super::pattern::{alt, alt_of, class, lit, none_of, one_of, seq, words, Re};
use macros::*;
use std::sync::OnceLock;

/// pycocoevalcap's `PUNCTUATIONS` (tokens dropped after tokenisation). The bracket names can never
/// match: the tokens are lower-cased by then.
pub const PUNCTUATIONS: [&str; 17] = ["''", "'", "``", "`", "-LRB-", "-RRB-", "-LCB-", "-RCB-", ".", "?", "!", ",", ":", "-", "--", "...", ";"];

/// What a rule does with its text.
#[derive(Clone, Copy)]
enum Act {
    Tok,
    /// Soft hyphens removed (an all-soft-hyphen token becomes `-`).
    SoftHyphens,
    /// Keep all but the last n characters; they are scanned again (`cannot` -> `can` `not`).
    Split(usize),
    /// Quotes in LaTeX style; `true`: an ASCII quote is probably an opening one.
    Quote(bool),
    /// Spaces inside the token become no-break spaces; `true`: also `(`/`)` -> `-LRB-`/`-RRB-`.
    Nbsp(bool),
    Parens,
    Amp,
    Fractions,
    Currency,
    Fixed(&'static str),
    /// 3-4 hyphens are a dash (`--`); other runs stay.
    Hyphens,
    /// An acronym before a sentence-starting word: `I.` gives `I` and `.`, `U.S.` gives `U.S.` and `.`.
    AcronymEnd,
    /// The abbreviation with its period, and the period again as a token (it ends a sentence too).
    PeriodAgain,
    Skip,
    /// A line break (a caption boundary when it holds `\n`).
    Newline,
}

struct Rule {
    re: Re,
    /// Trailing context: must follow, counts for the longest match, is not consumed.
    after: Option<Re>,
    act: Act,
    /// `re.can_start(c)` for ASCII `c`, worked out once (most characters are ASCII).
    ascii_start: [bool; 128],
}

impl Rule {
    fn new(re: Re, after: Option<Re>, act: Act) -> Rule {
        let ascii_start = std::array::from_fn(|c| re.can_start(c as u8 as char));
        Rule { re, after, act, ascii_start }
    }
    fn can_start(&self, c: char) -> bool {
        if c.is_ascii() {
            self.ascii_start[c as usize]
        } else {
            self.re.can_start(c)
        }
    }
}

fn rules() -> &'static [Rule] {
    static RULES: OnceLock<Vec<Rule>> = OnceLock::new();
    RULES.get_or_init(|| {
        let r = |re: Re, act: Act| Rule::new(re, None, act);
        let ra = |re: Re, after: Re, act: Act| Rule::new(re, Some(after), act);
        let insentp = || one_of(",;:\u{3001}");
        let [full_url, likely_url] = urls();
        let [smiley, asian_smiley] = smileys();
        let sentence_starters = [
            "About",
            "According",
            "Additionally",
            "After",
            "An",
            "A",
            "As",
            "At",
            "But",
            "Earlier",
            "He",
            "Her",
            "Here",
            "However",
            "If",
            "In",
            "It",
            "Last",
            "Many",
            "More",
            "Mr.",
            "Ms.",
            "Now",
            "Once",
            "One",
            "Other",
            "Our",
            "She",
            "Since",
            "So",
            "Some",
            "Such",
            "That",
            "The",
            "Their",
            "Then",
            "There",
            "These",
            "They",
            "This",
            "We",
            "When",
            "While",
            "What",
            "Yet",
            "You",
        ];
        let starter = alt_of(sentence_starters.iter().map(|w| cap(w)).chain([sgml()]).collect());
        vec![
            r(seq([lit("c"), lit("++")]), Act::Tok),
            r(seq([one_of("cfCF"), lit("#")]), Act::Tok),
            r(lit("cannot"), Act::Split(3)),
            r(lit("'twas"), Act::Split(3)),
            r(lit("'tis"), Act::Split(2)),
            r(words("gonna|gotta|lemme|gimme|wanna"), Act::Split(2)),
            r(sgml(), Act::Nbsp(false)),
            r(alt([seq([lit("&"), words("MD|mdash|ndash"), lit(";")]), one_of("\u{96}\u{97}\u{2013}\u{2014}\u{2015}")]), Act::Fixed("--")),
            r(lit("&amp;"), Act::Amp),
            r(seq([lit("&"), alt([words("HT|TL|UR|LR|QC|QL|QR|odq|cdq"), seq([lit("#"), ascii_digit().plus()])]), lit(";")]), Act::Tok),
            ra(word(), redaux(), Act::SoftHyphens),
            ra(sword(), sredaux(), Act::SoftHyphens),
            r(word(), Act::SoftHyphens),
            r(apoword(), Act::Tok),
            ra(seq([lit("y"), apos()]), class(letter), Act::Tok),
            r(full_url, Act::Tok),
            r(likely_url, Act::Tok),
            r(email(), Act::Tok),
            r(
                alt([
                    seq([lit("@"), class(|c| c.is_ascii_alphabetic() || c == '_'), class(|c| c.is_ascii_alphanumeric() || c == '_').star()]),
                    seq([lit("#"), l().plus()]),
                ]),
                Act::Tok,
            ),
            ra(redaux(), class(|c| !c.is_ascii_alphabetic()), Act::Quote(false)),
            ra(sredaux(), class(|c| !c.is_ascii_alphabetic()), Act::Quote(false)),
            r(seq([d().rep(1, 2), one_of("-/"), d().rep(1, 2), one_of("-/"), d().rep(2, 4)]), Act::Tok),
            r(number(), Act::SoftHyphens),
            r(
                seq([
                    one_of("\u{207A}\u{207B}\u{208A}\u{208B}").opt(),
                    alt([
                        class(|c| matches!(c, '\u{2070}' | '\u{B9}' | '\u{B2}' | '\u{B3}' | '\u{2074}'..='\u{2079}')).plus(),
                        class(|c| ('\u{2080}'..='\u{2089}').contains(&c)).plus(),
                    ]),
                ]),
                Act::Tok,
            ),
            r(frac(), Act::Nbsp(false)),
            r(class(|c| matches!(c, '\u{BC}'..='\u{BE}' | '\u{2153}'..='\u{215E}')), Act::Fractions),
            r(
                alt([
                    seq([lit("-"), words("RRB|LRB|RCB|LCB|RSB|LSB"), lit("-")]),
                    words("C.D.s|pro-|anti-"),
                    seq([lit("S"), alt([lit("&"), lit("&amp;")]), words("P-500|Ls")]),
                    seq([lit("Cap"), apos(), lit("n")]),
                    seq([lit("c"), apos(), lit("est")]),
                ]),
                Act::Amp,
            ),
            r(thing3(), Act::Tok),
            r(alt([seq([class(|c| c.is_ascii_uppercase()).star(), lit("$")]), lit("#")]), Act::Tok),
            r(one_of("\u{A2}\u{A3}\u{A4}\u{A5}\u{80}\u{20A0}\u{20AC}\u{60B}\u{E3F}\u{20A4}\u{FFE0}\u{FFE1}\u{FFE5}\u{FFE6}"), Act::Currency),
            ra(seq([acro(false), lit(".")]), seq([space_nl().plus(), starter, space_nl()]), Act::AcronymEnd),
            ra(seq([words("ca|fig|figs|prop|no|nos|art|bldg|pp|op"), lit(".")]), seq([space_nl().opt(), class(digit)]), Act::Tok),
            ra(seq([alt([seq([lit("pt"), one_of("eyEY")]), lit("co")]), lit(".")]), seq([space(), words("ltd|lim")]), Act::Tok),
            ra(abbrev1(), seq([space_nl(), alt([space_nl(), class(char::is_uppercase), sgml()])]), Act::PeriodAgain),
            ra(abbrev1(), class(|_| true).rep(2, 2), Act::Tok),
            r(abbrev1(), Act::PeriodAgain),
            r(seq([abbrev4(), lit(".")]), Act::Tok),
            ra(abbrev4(), space(), Act::Tok),
            ra(acro(false), space_nl(), Act::Tok),
            ra(seq([apos(), ascii_digit(), ascii_digit()]), space_nl(), Act::Tok),
            ra(filename(), alt([space_nl(), one_of(".?!,")]), Act::Tok),
            ra(seq([word(), lit(".")]), insentp(), Act::SoftHyphens),
            r(phone(), Act::Nbsp(true)),
            ra(alt([lit("\""), lit("&quot;")]), class(|c| c.is_ascii_alphanumeric() || c == '$'), Act::Quote(true)),
            r(alt([lit("\""), lit("&quot;")]), Act::Quote(false)),
            r(lit("\u{7F}"), Act::Skip),
            r(alt([lit("<"), lit("&lt;")]), Act::Fixed("<")),
            r(alt([lit(">"), lit("&gt;")]), Act::Fixed(">")),
            ra(smiley, class(|c| !c.is_ascii_alphanumeric()), Act::Parens),
            r(asian_smiley, Act::Parens),
            r(lit("{"), Act::Fixed("-LCB-")),
            r(lit("}"), Act::Fixed("-RCB-")),
            r(lit("["), Act::Fixed("-LSB-")),
            r(lit("]"), Act::Fixed("-RSB-")),
            r(lit("("), Act::Fixed("-LRB-")),
            r(lit(")"), Act::Fixed("-RRB-")),
            r(lit("-").plus(), Act::Hyphens),
            r(alt([lit(".").rep(3, 5), seq([seq([lit("."), one_of(" \u{A0}")]).rep(2, 4), lit(".")]), one_of("\u{85}\u{2026}")]), Act::Fixed("...")),
            r(alt([lit("@").plus(), lit("#").plus(), lit("_").plus()]), Act::Tok),
            r(alt([lit("*").plus(), lit("\\*").rep(1, 3)]), Act::Tok),
            r(insentp(), Act::Tok),
            r(one_of("?!").plus(), Act::Tok),
            r(one_of(".\u{A1}\u{BF}\u{37E}\u{589}\u{61F}\u{6D4}\u{700}\u{701}\u{702}\u{7FA}\u{3002}"), Act::Tok),
            r(lit("="), Act::Tok),
            r(lit("/"), Act::Tok),
            ra(seq([hthing(), lit(".")]), insentp(), Act::SoftHyphens),
            r(hthing(), Act::SoftHyphens),
            ra(seq([thing(), lit(".")]), insentp(), Act::Tok),
            r(thing(), Act::Tok),
            ra(seq([thinga(), lit(".")]), insentp(), Act::Amp),
            r(thinga(), Act::Amp),
            ra(lit("'"), seq([ascii_alpha(), none_of(" \t\n\r\u{A0}")]), Act::Quote(true)),
            r(redaux(), Act::Quote(false)),
            r(sredaux(), Act::Quote(false)),
            r(quotes(), Act::Quote(false)),
            r(words("<<|>>"), Act::Tok),
            r(class(misc_symbol), Act::Tok),
            r(alt([space().plus(), one_of("\0\u{200B}\u{200E}\u{200F}\u{FEFF}")]), Act::Skip),
            r(newline(), Act::Newline),
            r(lit("&nbsp;"), Act::Skip),
        ]
    })
}

/// LaTeX-style quotes as the scanner writes them (ASCII quotes by the guessed side, curly ones by theirs).
fn latex_quotes(t: &str, left: bool) -> String {
    let (single, double) = if left { ("`", "``") } else { ("'", "''") };
    let t = t.replace("&apos;", single).replace('\'', single).replace("&quot;", double).replace('"', double);
    let mut out = String::with_capacity(t.len());
    for c in t.chars() {
        match c {
            '\u{91}' | '\u{2018}' | '\u{201B}' | '\u{2039}' => out.push('`'),
            '\u{92}' | '\u{2019}' | '\u{203A}' => out.push('\''),
            '\u{93}' | '\u{201C}' | '\u{AB}' => out.push_str("``"),
            '\u{94}' | '\u{201D}' | '\u{BB}' => out.push_str("''"),
            c => out.push(c),
        }
    }
    out
}

/// `&amp;` (any case) -> `&`.
fn replace_amp(t: &str) -> String {
    let mut out = String::with_capacity(t.len());
    let mut i = 0;
    while let Some(c) = t[i..].chars().next() {
        if t.as_bytes()[i..].get(..5).is_some_and(|b| b.eq_ignore_ascii_case(b"&amp;")) {
            out.push('&');
            i += 5;
        } else {
            out.push(c);
            i += c.len_utf8();
        }
    }
    out
}

fn parens(t: &str) -> String {
    t.replace('(', "-LRB-").replace(')', "-RRB-")
}

/// Scans `s` as the Java tokenizer does with `tokenizeNLs`: tokens (before lower-casing), `None`
/// for each line break.
fn lex(s: &[char]) -> Vec<Option<String>> {
    let mut out = Vec::new();
    let mut i = 0;
    while i < s.len() {
        // (total length with trailing context, end of the token text, rule): longest total, first rule
        let mut best: Option<(usize, usize, &Rule)> = None;
        for rule in rules().iter().filter(|r| r.can_start(s[i])) {
            let ends = rule.re.ends(s, &[i]);
            let m = match &rule.after {
                None => ends.last().filter(|&&e| e > i).map(|&e| (e, e)),
                Some(after) => ends.iter().filter(|&&e| e > i).filter_map(|&e| after.longest(s, e).map(|t| (t, e))).max(),
            };
            if let Some((total, end)) = m {
                if best.is_none_or(|(t, _, _)| total > t) {
                    best = Some((total, end, rule));
                }
            }
        }
        let Some((_, end, rule)) = best else {
            // untokenizable: the scanner drops it (and logs a warning)
            i += 1;
            continue;
        };
        let text: String = s[i..end].iter().collect();
        let mut next = end;
        let tok = match rule.act {
            Act::Tok => Some(text),
            Act::SoftHyphens => {
                let t: String = text.chars().filter(|&c| c != SHY).collect();
                Some(if t.is_empty() { "-".into() } else { t })
            }
            Act::Split(n) => {
                next = end - n;
                Some(s[i..next].iter().collect())
            }
            Act::Quote(left) => Some(latex_quotes(&text, left)),
            Act::Nbsp(p) => {
                let t = text.replace(' ', "\u{A0}");
                Some(if p { parens(&t) } else { t })
            }
            Act::Parens => Some(parens(&text)),
            Act::Amp => Some(replace_amp(&text)),
            Act::Fractions => {
                Some(text.replace('\u{BC}', "1/4").replace('\u{BD}', "1/2").replace('\u{BE}', "3/4").replace('\u{2153}', "1/3").replace('\u{2154}', "2/3"))
            }
            Act::Currency => Some(match s[i] {
                '\u{A2}' => "cents".into(),
                '\u{A3}' => "#".into(),
                '\u{80}' | '\u{A4}' | '\u{20A0}' | '\u{20AC}' => "$".into(),
                _ => text,
            }),
            Act::Fixed(f) => Some(f.into()),
            Act::Hyphens => Some(if (3..=4).contains(&(end - i)) { "--".into() } else { text }),
            Act::AcronymEnd if end - i == 2 => {
                next = end - 1;
                Some(s[i..next].iter().collect())
            }
            Act::AcronymEnd | Act::PeriodAgain => {
                next = end - 1;
                Some(text)
            }
            Act::Skip => None,
            Act::Newline => {
                // only `\n` (which separates the captions) starts a new line here; see the module doc
                if text.contains('\n') {
                    out.push(None);
                }
                None
            }
        };
        out.extend(tok.map(Some));
        i = next;
    }
    out
}

/// Python's `str.isspace` for one character (what `str.split()` and `str.rstrip()` cut at).
pub(crate) fn py_space(c: char) -> bool {
    c.is_whitespace() || ('\u{1C}'..='\u{1F}').contains(&c)
}

/// The captions as pycocoevalcap's `PTBTokenizer.tokenize` returns them when it writes them in
/// this order: one string per caption, its PTB tokens lower-cased, without the punctuation
/// tokens, joined by single spaces. (The order matters in rare cases: a few rules look past the
/// end of a caption into the next line, e.g. `fig.` stays whole before a digit.)
pub fn ptb_lines<S: AsRef<str>>(captions: &[S]) -> Vec<String> {
    let text: Vec<char> = captions.iter().map(|c| c.as_ref().replace('\n', " ")).collect::<Vec<_>>().join("\n").chars().collect();
    let mut lines: Vec<Vec<String>> = vec![Vec::new()];
    for x in lex(&text) {
        match x {
            Some(t) => lines.last_mut().unwrap().push(t.to_lowercase()),
            None => lines.push(Vec::new()),
        }
    }
    lines.truncate(captions.len());
    lines
        .into_iter()
        .map(|toks| {
            // `line.rstrip().split(' ')`, then the punctuation filter, on the Java output line
            let line = toks.join(" ");
            let kept: Vec<&str> = line.trim_end_matches(py_space).split(' ').filter(|t| !PUNCTUATIONS.contains(t)).collect();
            kept.join(" ")
        })
        .collect()
}

/// One caption tokenised as pycocoevalcap does when it is the only one (or the last) in the file.
pub fn ptb_line(caption: &str) -> String {
    ptb_lines(&[caption]).pop().unwrap_or_default()
}
