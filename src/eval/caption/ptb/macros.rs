//! The PTB scanner's building blocks (JFlex calls them macros): character classes and the
//! patterns the rules in [`super`] are made of, each written as the behaviour it reproduces.
use super::super::pattern::{alt, alt_of, class, exact, lit, none_of, one_of, seq, words, Re};

pub(super) const SHY: char = '\u{AD}';

/// Java's `Character.isLetter` (general category L*), approximated outside ASCII by Unicode
/// `Alphabetic` without the letter numbers (Nl), the circled letters (So) and the combining
/// marks (Mn, Mc) of the Latin, Greek, Cyrillic, Hebrew, Arabic, Syriac and main Indic blocks.
pub(super) fn letter(c: char) -> bool {
    if c.is_ascii() {
        return c.is_ascii_alphabetic();
    }
    c.is_alphabetic()
        && !matches!(c as u32,
            0x16EE..=0x16F0 | 0x2160..=0x2182 | 0x2185..=0x2188 | 0x3007 | 0x3021..=0x3029 | 0x3038..=0x303A | 0xA6E6..=0xA6EF | 0x10140..=0x10174 | 0x10341
            | 0x1034A | 0x103D1..=0x103D5 | 0x12400..=0x1246E | 0x24B6..=0x24E9 | 0x1F130..=0x1F189)
        && !matches!(c as u32,
            0x300..=0x36F | 0x483..=0x489 | 0x591..=0x5C7 | 0x610..=0x61A | 0x64B..=0x65F | 0x670 | 0x6D6..=0x6DC | 0x6DF..=0x6E4 | 0x6E7 | 0x6E8
            | 0x6EA..=0x6ED | 0x711 | 0x730..=0x74A | 0x7A6..=0x7B0 | 0x7EB..=0x7F3 | 0x900..=0x903 | 0x93A..=0x93C | 0x93E..=0x94F | 0x951..=0x957 | 0x962
            | 0x963 | 0x981..=0x983 | 0x9BC | 0x9BE..=0x9CD | 0x9D7 | 0x9E2 | 0x9E3 | 0xA01..=0xA03 | 0xA3C..=0xA51 | 0xA70 | 0xA71 | 0xA75 | 0xA81..=0xA83
            | 0xABC | 0xABE..=0xACD | 0xAE2 | 0xAE3 | 0xB01..=0xB03 | 0xB3C | 0xB3E..=0xB57 | 0xB82 | 0xBBE..=0xBCD | 0xBD7 | 0xC00..=0xC03 | 0xC3E..=0xC56
            | 0xC81..=0xC83 | 0xCBC | 0xCBE..=0xCD6 | 0xD00..=0xD03 | 0xD3E..=0xD57 | 0xE31 | 0xE34..=0xE3A | 0xE47..=0xE4E | 0xEB1 | 0xEB4..=0xEBC
            | 0xEC8..=0xECD)
}

/// Java's `Character.isDigit` (Nd): ASCII and the common decimal-digit blocks.
pub(super) fn digit(c: char) -> bool {
    const ZEROS: [u32; 22] = [
        0x660, 0x6F0, 0x7C0, 0x966, 0x9E6, 0xA66, 0xAE6, 0xB66, 0xBE6, 0xC66, 0xCE6, 0xD66, 0xE50, 0xED0, 0xF20, 0x1040, 0x17E0, 0x1810, 0x1946, 0x19D0,
        0xFF10, 0x1D7CE,
    ];
    c.is_ascii_digit() || (!c.is_ascii() && ZEROS.iter().any(|&z| (z..z + 10).contains(&(c as u32))))
}

/// The scanner's LETTER class: letters plus the soft hyphen and the combining marks, modifiers
/// and signs it lists (mostly Greek, Cyrillic, Hebrew, Arabic, Syriac and Indic).
pub(super) fn letter_ext(c: char) -> bool {
    letter(c)
        || matches!(c as u32,
            0xAD | 0x237..=0x24F | 0x2C2..=0x2C5 | 0x2D2..=0x2DF | 0x2E5..=0x2FF | 0x300..=0x36F | 0x370..=0x37D | 0x384 | 0x385 | 0x3CF | 0x3F6
            | 0x3FC..=0x3FF | 0x483..=0x487 | 0x4CF | 0x4F6..=0x4FF | 0x510..=0x525 | 0x55A..=0x55F | 0x591..=0x5BD | 0x5BF | 0x5C1 | 0x5C2 | 0x5C4 | 0x5C5
            | 0x5C7 | 0x615..=0x61A | 0x63B..=0x63F | 0x64B..=0x65E | 0x670 | 0x6D6..=0x6EF | 0x6FA..=0x6FF | 0x70F | 0x711 | 0x730..=0x74F | 0x750..=0x77F
            | 0x7A6..=0x7B1 | 0x7CA..=0x7F5 | 0x7FA | 0x900..=0x903 | 0x93C | 0x93E..=0x94E | 0x951..=0x955 | 0x962 | 0x963 | 0x981..=0x983 | 0x9BC..=0x9C4
            | 0x9C7 | 0x9C8 | 0x9CB..=0x9CD | 0x9D7 | 0x9E2 | 0x9E3 | 0xA01..=0xA03 | 0xA3C | 0xA3E..=0xA4F | 0xA81..=0xA83 | 0xABC..=0xACF | 0xB82
            | 0xBBE..=0xBC2 | 0xBC6..=0xBC8 | 0xBCA..=0xBCD | 0xC01..=0xC03 | 0xC3E..=0xC56 | 0xD3E..=0xD44 | 0xD46..=0xD48 | 0xE30..=0xE3A | 0xE47..=0xE4E
            | 0xEB1..=0xEBC | 0xEC8..=0xECD)
}

pub(super) fn ascii_alpha() -> Re {
    class(|c| c.is_ascii_alphabetic())
}
pub(super) fn ascii_digit() -> Re {
    class(|c| c.is_ascii_digit())
}
pub(super) fn ascii_alnum() -> Re {
    class(|c| c.is_ascii_alphanumeric())
}
pub(super) fn d() -> Re {
    class(digit)
}
/// A word whose first letter must be this upper-case letter (a class) and the rest any case.
pub(super) fn cap(w: &'static str) -> Re {
    seq([exact(w.chars().next().unwrap()), lit(&w[1..])])
}

pub(super) fn space() -> Re {
    class(|c| matches!(c, ' ' | '\t' | '\u{A0}' | '\u{2000}'..='\u{200A}' | '\u{3000}'))
}
pub(super) fn newline() -> Re {
    alt([seq([lit("\r").opt(), lit("\n")]), one_of("\r\u{2028}\u{2029}\u{B}\u{C}\u{85}")])
}
pub(super) fn space_nl() -> Re {
    alt([space(), newline()])
}
/// An SGML/HTML tag: `<!x ...>`, `<name attr="v" ...>`, `</name>`.
pub(super) fn sgml() -> Re {
    let start = || ascii_alpha();
    let rest = || class(|c| c.is_ascii_alphanumeric() || "_:.-".contains(c));
    let sp = || lit(" ");
    let value = alt([seq([lit("'"), none_of("'").star(), lit("'")]), seq([lit("\""), none_of("\"").star(), lit("\"")])]);
    let attr = alt([seq([start(), rest().star()]), seq([start(), rest().star(), sp().star(), lit("="), sp().star(), value])]);
    let decl = seq([one_of("!?"), class(|c| c.is_ascii_alphabetic() || c == '-'), none_of(">\r\n").star()]);
    let open = seq([start(), rest().star(), seq([sp().plus(), attr]).star(), sp().star(), lit("/").opt()]);
    let close = seq([lit("/"), start(), rest().star()]);
    seq([lit("<"), alt([decl, open, close]), sp().star(), lit(">")])
}
pub(super) fn apos() -> Re {
    alt([one_of("'\u{92}\u{2019}"), lit("&apos;")])
}
pub(super) fn apos_etc() -> Re {
    alt([apos(), one_of("`\u{91}\u{2018}\u{201B}")])
}
pub(super) fn l() -> Re {
    let entity = seq([lit("&"), one_of("aeiouAEIOU"), words("acute|grave|uml"), lit(";")]);
    alt([class(letter_ext), entity])
}
pub(super) fn word() -> Re {
    let tail = || alt([l(), d()]).star();
    seq([l(), tail(), seq([one_of(".!?"), l(), tail()]).star()])
}
/// `n't` (any apostrophe-like mark) and the word before it, which may not end in n.
pub(super) fn sredaux() -> Re {
    seq([lit("n"), apos_etc(), lit("t")])
}
pub(super) fn sword() -> Re {
    seq([class(|c| c.is_ascii_alphabetic() || c == SHY).star(), class(|c| c.is_ascii_alphabetic() && c != 'n' && c != 'N'), exact(SHY).star()])
}
pub(super) fn redaux() -> Re {
    seq([apos(), alt([one_of("msdMSD"), words("re|ve|ll")])])
}
/// Words that keep an apostrophe: `'n'`, `d'`, `o'clock`-like (a vowel before and after it),
/// `O'Neill`-like, `'90s`, `'til`, `c'mon`...
pub(super) fn apoword() -> Re {
    let jl = || class(letter);
    alt_of(vec![
        seq([apos(), lit("n"), apos().opt()]),
        seq([one_of("lLdDjJ"), apos()]),
        seq([words("Dunkin|somethin|ol"), apos()]),
        seq([apos(), lit("em")]),
        seq([class(|c| matches!(c, 'A'..='H' | 'J'..='X' | 'Z' | 'n')), apos_etc(), jl(), jl(), jl().star()]),
        seq([apos(), class(|c| ('2'..='9').contains(&c)), lit("0s")]),
        seq([apos(), lit("til"), lit("l").opt()]),
        seq([jl(), jl().star(), one_of("aeiouyAEIOUY"), apos_etc(), class(|c| "aeiou".contains(c) || c.is_ascii_uppercase()), jl().star()]),
        seq([apos(), lit("cause")]),
        seq([lit("cont'd"), lit(".").opt()]),
        words("'twas|nor'easter|c'mon|e'er|s'mores|ev'ry|li'l|nat'l"),
        seq([lit("O"), apos_etc(), lit("o")]),
    ])
}
pub(super) fn urls() -> [Re; 2] {
    const WS: &str = " \t\n\u{C}\r\"<>|(){}";
    let end = || class(|c| !(WS.contains(c) || ".!?,-".contains(c)));
    let full = seq([lit("http"), lit("s").opt(), lit("://"), none_of(WS).plus(), end()]);
    let www = seq([lit("www."), seq([class(|c| !(WS.contains(c) || ".!?,".contains(c))).plus(), lit(".")]).plus(), ascii_alpha().rep(2, 4)]);
    // `[^...,-_$]` in the scanner: `,-_` is a range, so digits and capitals are excluded too
    let label = class(|c| !(WS.contains(c) || "`'.!?$".contains(c) || (','..='_').contains(&c)));
    let domain = seq([seq([label.plus(), lit(".")]).plus(), words("com|net|org|edu")]);
    let path = seq([lit("/"), class(|c| !WS.contains(c) || "{}".contains(c)).plus(), end()]);
    [full, seq([alt([www, domain]), path.opt()])]
}
pub(super) fn email() -> Re {
    let part = || class(|c| !" \t\n\u{C}\r\"<>|(){}.\u{A0}".contains(c)).plus();
    seq([
        alt([lit("&lt;"), lit("<")]).opt(),
        ascii_alnum(),
        none_of(" \t\n\u{C}\r\"<>|()\u{A0}{}").star(),
        lit("@"),
        seq([part(), lit(".")]).star(),
        part(),
        alt([lit("&gt;"), lit(">")]).opt(),
    ])
}
pub(super) fn number() -> Re {
    let num = alt([d().plus(), seq([d().star(), seq([one_of(".:,\u{AD}\u{66B}\u{66C}"), d().plus()]).plus()])]);
    seq([one_of("-+").opt(), num])
}
pub(super) fn frac() -> Re {
    let slash = alt([seq([lit("\\").opt(), lit("/")]), exact('\u{2044}')]);
    seq([seq([d().rep(1, 4), one_of("- \u{A0}")]).opt(), d().rep(1, 4), slash, d().rep(1, 4)])
}
/// Letters and digits joined by hyphens (`black-and-white`), each part possibly `d'`/`o'`/`l'`-prefixed.
pub(super) fn thing() -> Re {
    let ld = || class(|c| letter(c) || digit(c));
    let part = || seq([seq([one_of("dDoOlL"), apos_etc(), ld()]).opt(), ld().plus()]);
    seq([part(), seq([one_of("-_\u{58A}\u{2010}\u{2011}"), part()]).star()])
}
/// ASCII words and numbers with hyphens, where the first part may hold `.` and `,` (`3.5-inch`).
pub(super) fn hthing() -> Re {
    let part = alt([class(|c| c.is_ascii_alphanumeric() || c == SHY).plus(), seq([acro(true), lit(".")])]);
    seq([ascii_alnum(), class(|c| c.is_ascii_alphanumeric() || ".,\u{AD}".contains(c)).star(), seq([lit("-"), part]).plus()])
}
pub(super) fn thinga() -> Re {
    let caps = || class(|c| c.is_ascii_uppercase()).plus();
    seq([caps(), seq([alt([one_of("+&"), lit("&amp;")]), caps()]).plus()])
}
/// `x/y`, `and/or`, `w/o`: slash-joined alphanumerics.
pub(super) fn thing3() -> Re {
    let part = || seq([ascii_alnum().plus(), seq([lit("-"), ascii_alpha().plus()]).rep(0, 2)]);
    seq([part(), seq([lit("\\").opt(), lit("/"), part()]).rep(1, 2)])
}
/// Single letters joined by periods (`U.S`, `a.m`), and a few fixed compounds; `two`: at least two letters.
pub(super) fn acro(two: bool) -> Re {
    let dotted = seq([ascii_alpha(), seq([lit("."), ascii_alpha()]).rep(usize::from(two), usize::MAX)]);
    alt([dotted, seq([words("Canada|Sino|Korean|EU|Japan|non"), lit("-U.S")]), seq([lit("U.S.-"), words("U.K|U.S.S.R")])])
}
/// Abbreviations normally followed by lower-case words (`etc.`, `Inc.`, `Jan.`).
pub(super) fn abbrev1() -> Re {
    let state = alt([
        words("Ala|Ariz|Calif|Colo|Conn|Ct|Dak|Fla|Ga|Ind|Kan|Kans|Ky|Md|Mich|Minn|Mo|Mont|Neb|Nev|Okla|Penn|Tenn|Va|Vt|Wis|Wisc|Wyo"),
        alt([cap("Az"), cap("Ark"), cap("Del"), cap("Ill"), cap("La"), cap("Mass"), cap("Miss"), cap("Ore"), cap("Pa"), cap("Tex"), cap("Wash")]),
    ]);
    let company =
        alt([words("Inc|Co|Cos|Corp|Ltd|Plc|Rt|Bancorp|Bhd|Assn|Univ|Intl|Sys"), seq([lit("P"), lit("p").opt(), lit("t"), one_of("ye"), lit("s").opt()])]);
    let other = alt([
        words("Jan|Feb|Mar|Apr|Jun|Jul|Aug|Sep|Sept|Oct|Nov|Dec|Mon|Tue|Tues|Wed|Thu|Thurs|Fri"),
        words("tel|est|ext|sq|Jr|Sr|Bros|Blvd|Rd|Esq|etc|al|seq|Bldg"),
        seq([words("Ed|Ph"), lit(".D")]),
    ]);
    seq([alt([state, company, other]), lit(".")])
}
/// Abbreviations normally followed by a capitalised word (titles, `vs`, acronyms), without the period.
pub(super) fn abbrev4() -> Re {
    let titles = words(
        "Mr|Mrs|Ms|Dr|Drs|Prof|Profs|Sen|Sens|Rep|Reps|Atty|Attys|Lt|Col|Gen|Messrs|Gov|Govs|Adm|Rev|Maj|Sgt|Cpl|Pvt|Capt|St|Ste|Ave|Pres|Lieut|Hon|Brig|Cmdr|Comdr|Pfc|Spc|Supt|Supts|Det|Mt|Ft|Adj|Adv|Asst|Assoc|Ens|Insp|Mlle|Mme|Msgr|Sfc",
    );
    let company = alt([words("Invt|Elec|Natl|Dept"), seq([lit("M"), one_of("ft"), lit("g")])]);
    alt([titles, cap("Miss"), words("vs|Alex|Wm|Jos|Cie|a.k.a|cf|TREAS|Ph"), acro(false), company])
}
/// Digit groups that look like phone numbers.
pub(super) fn phone() -> Re {
    let n = |a, b| ascii_digit().rep(a, b);
    let sep = || one_of("- \u{A0}");
    let plus = || seq([lit("+"), lit("+").opt()]).opt();
    let area = seq([lit("("), n(2, 3), lit(")"), one_of(" \u{A0}").opt()]);
    let prefix = seq([plus(), seq([n(2, 4), sep()]).opt(), n(2, 4), sep()]);
    let spaced = seq([alt([area, prefix]), n(3, 4), sep().opt(), n(3, 5)]);
    let dotted = seq([seq([plus(), n(2, 4), lit(".")]).opt(), n(2, 4), lit("."), n(3, 4), lit("."), n(3, 5)]);
    alt([spaced, dotted])
}
pub(super) fn quotes() -> Re {
    alt([
        apos(),
        lit("''"),
        one_of("`\u{2018}\u{2019}\u{201A}\u{201B}\u{201C}\u{201D}\u{91}\u{92}\u{93}\u{94}\u{201E}\u{201F}\u{2039}\u{203A}\u{AB}\u{BB}").rep(1, 2),
    ])
}
pub(super) fn smileys() -> [Re; 2] {
    let western = seq([one_of("<>").opt(), one_of(":;="), one_of("-o*'").opt(), one_of("()DPdpO\\{@|[]")]);
    let eye = || one_of("-^x=~<>'");
    let asian = alt_of(vec![
        seq([one_of("^x=~<>"), lit("."), lit("[^x=~<>]")]),
        seq([eye(), lit("_"), eye()]),
        seq([lit("("), eye(), one_of("_.").opt(), eye(), lit(")")]),
        seq([lit("("), one_of("^x=~<>'"), lit("-"), one_of("^x=~<>'`"), lit(")")]),
    ]);
    [western, asian]
}
/// Symbols that stand alone as tokens.
pub(super) fn misc_symbol(c: char) -> bool {
    matches!(c,
        '+' | '%' | '&' | '~' | '^' | '|' | '\\' | '\u{A6}' | '\u{A7}' | '\u{A8}' | '\u{A9}' | '\u{AC}' | '\u{AE}' | '\u{AF}' | '\u{B0}'..='\u{BA}' | '\u{D7}' | '\u{F7}'
        | '\u{387}' | '\u{5BE}' | '\u{5C0}' | '\u{5C3}' | '\u{5C6}' | '\u{5F3}' | '\u{5F4}' | '\u{600}'..='\u{603}' | '\u{606}'..='\u{60A}' | '\u{60C}' | '\u{614}'
        | '\u{61B}' | '\u{61E}' | '\u{66A}' | '\u{66D}' | '\u{703}'..='\u{70D}' | '\u{7F6}'..='\u{7F8}' | '\u{964}' | '\u{965}' | '\u{E4F}' | '\u{1FBD}' | '\u{2016}'
        | '\u{2017}' | '\u{2020}'..='\u{2023}' | '\u{2030}'..='\u{2038}' | '\u{203B}' | '\u{203E}'..='\u{2042}' | '\u{2044}' | '\u{207A}'..='\u{207F}'
        | '\u{208A}'..='\u{208E}' | '\u{2100}'..='\u{214F}' | '\u{2190}'..='\u{2BFF}' | '\u{3012}' | '\u{30FB}' | '\u{FF01}'..='\u{FF0F}' | '\u{FF1A}'..='\u{FF20}'
        | '\u{FF3B}'..='\u{FF40}' | '\u{FF5B}'..='\u{FF65}')
}

/// File names with a known extension (`photo.jpg`).
pub(super) fn filename() -> Re {
    let ld = || alt([l(), d()]);
    let ext = words("bat|bmp|c|class|cgi|cpp|dll|doc|docx|exe|gif|gz|h|htm|html|jar|java|jpeg|jpg|mov|mp3|pdf|php|pl|png|ppt|ps|py|sql|tar|txt|wav|x|xml|zip");
    seq([ld().plus(), seq([lit("."), ld().plus()]).star(), lit("."), ext])
}
