//! Naming a set of experts with a list of patterns: which experts a node computes
//! (`p2p.serve_experts`), which experts `blyan-miner upload --experts` publishes.
//!
//! A pattern is `*` (every expert) or `<layers>.<experts>`, where `<layers>` is `layer*`,
//! `layerN` or `layerA-B` (inclusive) and `<experts>` is `*`, `expertN` or `expertA-B`:
//! `layer0-1.*` is every expert of layers 0 and 1, `layer3.expert2-5` four experts of layer 3.
//! An empty list selects nothing.

use std::fmt;
use std::ops::RangeInclusive;
use std::str::FromStr;

use crate::expert::ExpertName;

/// Patterns in one selection at most.
pub const EXPERT_PATTERNS_MAX: usize = 256;

/// An expert pattern that does not parse.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "expert pattern {pattern:?}: {reason} (expected `*` or `layer<N|A-B|*>.<expert<N|A-B>|*>`)"
)]
pub struct ExpertPatternError {
    /// The pattern as given.
    pub pattern: String,
    /// What is wrong with it.
    pub reason: String,
}

/// One pattern: a range of layers and a range of experts (both inclusive).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExpertPattern {
    text: String,
    layers: RangeInclusive<u32>,
    experts: RangeInclusive<u32>,
}

impl ExpertPattern {
    /// Whether `expert` is selected.
    pub fn matches(&self, expert: ExpertName) -> bool {
        self.layers.contains(&expert.layer()) && self.experts.contains(&expert.expert())
    }
}

impl fmt::Display for ExpertPattern {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.text)
    }
}

/// `*`, `N` or `A-B` after `prefix`, as an inclusive range.
fn range(
    part: &str,
    prefix: &str,
    pattern: &str,
) -> Result<RangeInclusive<u32>, ExpertPatternError> {
    let error = |reason: String| ExpertPatternError {
        pattern: pattern.to_owned(),
        reason,
    };
    let rest = part
        .strip_prefix(prefix)
        .or_else(|| (part == "*" && prefix == "expert").then_some("*"))
        .ok_or_else(|| error(format!("`{part}` does not start with `{prefix}`")))?;
    if rest == "*" {
        return Ok(0..=u32::MAX);
    }
    let number = |text: &str| {
        text.parse::<u32>()
            .map_err(|_| error(format!("`{text}` is not an index")))
    };
    let (first, last) = match rest.split_once('-') {
        Some((first, last)) => (number(first)?, number(last)?),
        None => {
            let index = number(rest)?;
            (index, index)
        }
    };
    if first > last {
        return Err(error(format!("the range {first}-{last} is empty")));
    }
    Ok(first..=last)
}

impl FromStr for ExpertPattern {
    type Err = ExpertPatternError;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        let pattern = text.trim();
        if pattern == "*" {
            return Ok(Self {
                text: pattern.to_owned(),
                layers: 0..=u32::MAX,
                experts: 0..=u32::MAX,
            });
        }
        let (layers, experts) = pattern.split_once('.').ok_or_else(|| ExpertPatternError {
            pattern: pattern.to_owned(),
            reason: "no `.` between the layers and the experts".into(),
        })?;
        Ok(Self {
            text: pattern.to_owned(),
            layers: range(layers, "layer", pattern)?,
            experts: range(experts, "expert", pattern)?,
        })
    }
}

/// A set of experts: a list of [`ExpertPattern`]s (empty selects none).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ExpertSelection {
    patterns: Vec<ExpertPattern>,
}

impl ExpertSelection {
    /// Selects nothing.
    pub fn none() -> Self {
        Self::default()
    }

    /// Parses each pattern; the first that does not parse is the error. More than
    /// [`EXPERT_PATTERNS_MAX`] patterns are refused.
    pub fn parse<S: AsRef<str>>(patterns: &[S]) -> Result<Self, ExpertPatternError> {
        if patterns.len() > EXPERT_PATTERNS_MAX {
            return Err(ExpertPatternError {
                pattern: format!("{} patterns", patterns.len()),
                reason: format!("at most {EXPERT_PATTERNS_MAX} patterns"),
            });
        }
        Ok(Self {
            patterns: patterns
                .iter()
                .map(|pattern| pattern.as_ref().parse())
                .collect::<Result<_, _>>()?,
        })
    }

    /// Whether `expert` is selected by any pattern.
    pub fn matches(&self, expert: ExpertName) -> bool {
        self.patterns.iter().any(|pattern| pattern.matches(expert))
    }

    /// Whether no pattern is given.
    pub fn is_empty(&self) -> bool {
        self.patterns.is_empty()
    }

    /// The patterns, as given.
    pub fn patterns(&self) -> &[ExpertPattern] {
        &self.patterns
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn expert(layer: u32, expert: u32) -> ExpertName {
        ExpertName::new(layer, expert).unwrap()
    }

    fn check(patterns: &[&str], selected: &[(u32, u32)], not: &[(u32, u32)]) {
        let selection = ExpertSelection::parse(patterns).unwrap();
        for (layer, index) in selected {
            assert!(
                selection.matches(expert(*layer, *index)),
                "{patterns:?} {layer}.{index}"
            );
        }
        for (layer, index) in not {
            assert!(
                !selection.matches(expert(*layer, *index)),
                "{patterns:?} {layer}.{index}"
            );
        }
    }

    #[test]
    fn patterns_select_what_they_say() {
        check(&["*"], &[(0, 0), (3, 7)], &[]);
        check(&["layer0.*"], &[(0, 0), (0, 7)], &[(1, 0)]);
        check(&["layer0-1.*"], &[(0, 3), (1, 7)], &[(2, 0)]);
        check(&["layer*.expert2"], &[(0, 2), (3, 2)], &[(0, 3)]);
        check(
            &["layer3.expert2-5", "layer0.expert0"],
            &[(3, 2), (3, 5), (0, 0)],
            &[(3, 6), (0, 1)],
        );
        check(&[], &[], &[(0, 0)]);
    }

    #[test]
    fn bad_patterns_are_typed_errors_naming_the_pattern() {
        for bad in [
            "layer0",
            "layers0.*",
            "layer2-1.*",
            "layerx.*",
            "layer0.exp1",
            "layer0.expert1-",
        ] {
            let error = ExpertSelection::parse(&[bad]).unwrap_err();
            assert_eq!(error.pattern, bad);
        }
        let many: Vec<String> = (0..=EXPERT_PATTERNS_MAX).map(|_| "*".to_owned()).collect();
        assert!(ExpertSelection::parse(&many).is_err());
        assert!(ExpertSelection::parse(&many[..EXPERT_PATTERNS_MAX]).is_ok());
    }
}
