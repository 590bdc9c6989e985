//! Charset and language heuristics: is the text made of characters a reader can read, written in
//! the script of the language it declares, and (when long enough to tell) in that language?
//!
//! Scripts are judged by Unicode block ranges, for the languages of [`LANGUAGES`]; a language not
//! listed there is judged on control and replacement characters and letter share only. The
//! language itself is identified with `whatlang` (trigram models), and only its reliable answers
//! on texts of at least [`L0Config::language_detect_chars_min`](crate::L0Config) characters
//! count.

/// A writing system, by Unicode ranges.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Script {
    /// Latin letters (Basic Latin to Latin Extended-B, Latin Extended Additional).
    Latin,
    /// Cyrillic.
    Cyrillic,
    /// Greek.
    Greek,
    /// Arabic.
    Arabic,
    /// Hebrew.
    Hebrew,
    /// Devanagari.
    Devanagari,
    /// Thai.
    Thai,
    /// Han ideographs.
    Han,
    /// Hiragana and Katakana.
    Kana,
    /// Hangul.
    Hangul,
    /// Armenian.
    Armenian,
    /// Georgian.
    Georgian,
    /// Bengali.
    Bengali,
    /// Tamil.
    Tamil,
}

impl Script {
    /// Stable snake_case name.
    pub fn as_str(self) -> &'static str {
        match self {
            Script::Latin => "latin",
            Script::Cyrillic => "cyrillic",
            Script::Greek => "greek",
            Script::Arabic => "arabic",
            Script::Hebrew => "hebrew",
            Script::Devanagari => "devanagari",
            Script::Thai => "thai",
            Script::Han => "han",
            Script::Kana => "kana",
            Script::Hangul => "hangul",
            Script::Armenian => "armenian",
            Script::Georgian => "georgian",
            Script::Bengali => "bengali",
            Script::Tamil => "tamil",
        }
    }

    /// The script of a letter, if it is one of ours.
    fn of(ch: char) -> Option<Script> {
        let code = u32::from(ch);
        Some(match code {
            0x41..=0x5a | 0x61..=0x7a | 0xc0..=0x24f | 0x1e00..=0x1eff => Script::Latin,
            0x370..=0x3ff | 0x1f00..=0x1fff => Script::Greek,
            0x400..=0x52f => Script::Cyrillic,
            0x530..=0x58f => Script::Armenian,
            0x590..=0x5ff => Script::Hebrew,
            0x600..=0x6ff | 0x750..=0x77f => Script::Arabic,
            0x900..=0x97f => Script::Devanagari,
            0x980..=0x9ff => Script::Bengali,
            0xb80..=0xbff => Script::Tamil,
            0xe00..=0xe7f => Script::Thai,
            0x10a0..=0x10ff => Script::Georgian,
            0x1100..=0x11ff | 0xac00..=0xd7af => Script::Hangul,
            0x3040..=0x30ff => Script::Kana,
            0x3400..=0x4dbf | 0x4e00..=0x9fff => Script::Han,
            _ => return None,
        })
    }
}

/// Declared ISO 639-1 code → the `whatlang` language and the scripts its text is written in.
pub const LANGUAGES: &[(&str, whatlang::Lang, &[Script])] = {
    use Script::*;
    use whatlang::Lang;
    &[
        ("en", Lang::Eng, &[Latin]),
        ("de", Lang::Deu, &[Latin]),
        ("fr", Lang::Fra, &[Latin]),
        ("es", Lang::Spa, &[Latin]),
        ("it", Lang::Ita, &[Latin]),
        ("pt", Lang::Por, &[Latin]),
        ("nl", Lang::Nld, &[Latin]),
        ("sv", Lang::Swe, &[Latin]),
        ("da", Lang::Dan, &[Latin]),
        ("nb", Lang::Nob, &[Latin]),
        ("no", Lang::Nob, &[Latin]),
        ("fi", Lang::Fin, &[Latin]),
        ("pl", Lang::Pol, &[Latin]),
        ("cs", Lang::Ces, &[Latin]),
        ("sk", Lang::Slk, &[Latin]),
        ("sl", Lang::Slv, &[Latin]),
        ("hr", Lang::Hrv, &[Latin]),
        ("hu", Lang::Hun, &[Latin]),
        ("ro", Lang::Ron, &[Latin]),
        ("tr", Lang::Tur, &[Latin]),
        ("et", Lang::Est, &[Latin]),
        ("lv", Lang::Lav, &[Latin]),
        ("lt", Lang::Lit, &[Latin]),
        ("ca", Lang::Cat, &[Latin]),
        ("id", Lang::Ind, &[Latin]),
        ("vi", Lang::Vie, &[Latin]),
        ("eo", Lang::Epo, &[Latin]),
        ("la", Lang::Lat, &[Latin]),
        ("af", Lang::Afr, &[Latin]),
        ("cy", Lang::Cym, &[Latin]),
        ("tl", Lang::Tgl, &[Latin]),
        ("ru", Lang::Rus, &[Cyrillic]),
        ("uk", Lang::Ukr, &[Cyrillic]),
        ("be", Lang::Bel, &[Cyrillic]),
        ("bg", Lang::Bul, &[Cyrillic]),
        ("mk", Lang::Mkd, &[Cyrillic]),
        ("sr", Lang::Srp, &[Cyrillic, Latin]),
        ("el", Lang::Ell, &[Greek]),
        ("ar", Lang::Ara, &[Arabic]),
        ("fa", Lang::Pes, &[Arabic]),
        ("ur", Lang::Urd, &[Arabic]),
        ("he", Lang::Heb, &[Hebrew]),
        ("hi", Lang::Hin, &[Devanagari]),
        ("mr", Lang::Mar, &[Devanagari]),
        ("ne", Lang::Nep, &[Devanagari]),
        ("bn", Lang::Ben, &[Bengali]),
        ("ta", Lang::Tam, &[Tamil]),
        ("th", Lang::Tha, &[Thai]),
        ("hy", Lang::Hye, &[Armenian]),
        ("ka", Lang::Kat, &[Georgian]),
        ("zh", Lang::Cmn, &[Han]),
        ("ja", Lang::Jpn, &[Han, Kana]),
        ("ko", Lang::Kor, &[Hangul, Han]),
    ]
};

/// The `whatlang` language and scripts of a declared language, if listed.
pub(crate) fn language(code: &str) -> Option<(whatlang::Lang, &'static [Script])> {
    LANGUAGES
        .iter()
        .find(|(listed, _, _)| *listed == code)
        .map(|(_, lang, scripts)| (*lang, *scripts))
}

/// The ISO 639-1 code of a `whatlang` language (the first listed), or its ISO 639-3 code.
pub(crate) fn code_of(lang: whatlang::Lang) -> &'static str {
    LANGUAGES
        .iter()
        .find(|(_, listed, _)| *listed == lang)
        .map_or(lang.code(), |(code, _, _)| code)
}

/// Character counts of a text.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(crate) struct Profile {
    /// Characters other than white space.
    pub(crate) visible: usize,
    /// Alphabetic characters.
    pub(crate) letters: usize,
    /// Control characters other than tab, line feed and carriage return; the first one's byte
    /// offset.
    pub(crate) controls: usize,
    pub(crate) first_control: Option<(usize, char)>,
    /// U+FFFD REPLACEMENT CHARACTER: left where a decoder met bytes it could not read.
    pub(crate) replacements: usize,
}

impl Profile {
    pub(crate) fn of(text: &str) -> Self {
        let mut profile = Profile::default();
        for (at, ch) in text.char_indices() {
            if ch.is_whitespace() {
                continue;
            }
            profile.visible += 1;
            if ch.is_alphabetic() {
                profile.letters += 1;
            } else if ch.is_control() {
                profile.controls += 1;
                profile.first_control.get_or_insert((at, ch));
            } else if ch == char::REPLACEMENT_CHARACTER {
                profile.replacements += 1;
            }
        }
        profile
    }
}

/// The share of `text`'s letters written in one of `scripts`.
pub(crate) fn script_share(text: &str, scripts: &[Script]) -> f64 {
    let (mut letters, mut in_script) = (0usize, 0usize);
    for ch in text.chars().filter(|ch| ch.is_alphabetic()) {
        letters += 1;
        if Script::of(ch).is_some_and(|script| scripts.contains(&script)) {
            in_script += 1;
        }
    }
    if letters == 0 {
        return 0.0;
    }
    in_script as f64 / letters as f64
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_listed_language_is_two_lower_case_letters_and_listed_once() {
        for (index, (code, _, scripts)) in LANGUAGES.iter().enumerate() {
            assert!(code.len() == 2 && code.bytes().all(|b| b.is_ascii_lowercase()));
            assert!(!scripts.is_empty());
            assert!(LANGUAGES[..index].iter().all(|(other, _, _)| other != code));
        }
        assert_eq!(code_of(whatlang::Lang::Nob), "nb");
    }

    #[test]
    fn scripts_are_told_apart() {
        assert_eq!(script_share("Hello, world", &[Script::Latin]), 1.0);
        assert_eq!(script_share("Привет, мир", &[Script::Latin]), 0.0);
        assert_eq!(script_share("Привет, мир", &[Script::Cyrillic]), 1.0);
        let mixed = script_share("日本語のテキスト", &[Script::Han, Script::Kana]);
        assert_eq!(mixed, 1.0);
        assert_eq!(script_share("12345 !!!", &[Script::Latin]), 0.0);
    }

    #[test]
    fn the_profile_counts_controls_and_replacement_characters() {
        let profile = Profile::of("ab\u{0007}c\u{fffd} 1\t\n");
        assert_eq!(profile.visible, 6);
        assert_eq!(profile.letters, 3);
        assert_eq!(profile.controls, 1);
        assert_eq!(profile.first_control, Some((2, '\u{0007}')));
        assert_eq!(profile.replacements, 1);
    }
}
