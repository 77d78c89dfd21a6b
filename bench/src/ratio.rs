//! A headline figure with its goal, and how the summary says whether it was met.

/// What a figure should be.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Goal {
    /// At most this.
    AtMost(f64),
    /// At least this.
    AtLeast(f64),
}

/// A ratio `a / b` with its goal (if any), for the summary.
#[derive(Debug, Clone, PartialEq)]
pub struct Ratio {
    /// What is divided by what.
    pub what: String,
    /// The ratio, `None` when either side has no rows (or the divisor is 0).
    pub value: Option<f64>,
    /// What it should be, if there is a goal.
    pub goal: Option<Goal>,
}

impl Ratio {
    /// A ratio with a goal of at most `g`.
    pub fn at_most(what: impl Into<String>, value: Option<f64>, g: f64) -> Ratio {
        Ratio {
            what: what.into(),
            value,
            goal: Some(Goal::AtMost(g)),
        }
    }

    /// A ratio with a goal of at least `g`.
    pub fn at_least(what: impl Into<String>, value: Option<f64>, g: f64) -> Ratio {
        Ratio {
            what: what.into(),
            value,
            goal: Some(Goal::AtLeast(g)),
        }
    }

    /// A ratio reported without a goal.
    pub fn info(what: impl Into<String>, value: Option<f64>) -> Ratio {
        Ratio {
            what: what.into(),
            value,
            goal: None,
        }
    }

    /// `Some(true)` when measured and its goal met, `Some(false)` when missed, `None` when it
    /// has no goal or was not measured.
    pub fn met(&self) -> Option<bool> {
        match (self.value, self.goal) {
            (Some(v), Some(Goal::AtMost(g))) => Some(v <= g),
            (Some(v), Some(Goal::AtLeast(g))) => Some(v >= g),
            _ => None,
        }
    }

    /// The value with its goal and "met" or "missed by X%": by how much the value is off the
    /// goal, relative to the goal.
    pub fn verdict(&self) -> String {
        let Some(v) = self.value else {
            return "n/a (not measured in this run)".into();
        };
        let (sign, g) = match self.goal {
            None => return format!("{v:.2}"),
            Some(Goal::AtMost(g)) => ("<=", g),
            Some(Goal::AtLeast(g)) => (">=", g),
        };
        if self.met() == Some(true) {
            format!("{v:.2}  (goal {sign} {g}: met)")
        } else {
            format!(
                "{v:.2}  (goal {sign} {g}: missed by {:.0}%)",
                ((v - g) / g).abs() * 100.0
            )
        }
    }
}

/// `a / b`, `None` when either is missing or `b` is not above 0.
pub fn quotient(a: Option<f64>, b: Option<f64>) -> Option<f64> {
    match (a, b) {
        (Some(a), Some(b)) if b > 0.0 => Some(a / b),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn verdicts_both_ways() {
        assert!(Ratio::at_most("x", Some(0.8), 0.9)
            .verdict()
            .ends_with("(goal <= 0.9: met)"));
        assert!(Ratio::at_most("x", Some(1.8), 0.9)
            .verdict()
            .contains("missed by 100%"));
        assert!(Ratio::at_least("x", Some(1.5), 3.0)
            .verdict()
            .contains("(goal >= 3: missed by 50%)"));
        assert!(Ratio::at_least("x", Some(3.0), 3.0)
            .verdict()
            .contains("met"));
        assert_eq!(Ratio::info("x", Some(2.0)).verdict(), "2.00");
        assert_eq!(Ratio::info("x", Some(2.0)).met(), None);
        assert!(Ratio::at_most("x", None, 1.0).verdict().starts_with("n/a"));
        assert_eq!(quotient(Some(1.0), Some(0.0)), None);
        assert_eq!(quotient(Some(1.0), None), None);
        assert_eq!(quotient(Some(1.0), Some(4.0)), Some(0.25));
    }
}
