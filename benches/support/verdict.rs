//! The verdict lines of the performance targets (issue 15's table): each
//! benchmark prints one line per figure it measures, and `scripts/bench`
//! gathers them into one table at the end.
//!
//! A line reads `VERDICT | figure | measured | target | PASS or MISS`.

/// Which way a figure must lie against its target.
#[derive(Debug, Clone, Copy)]
pub enum Want {
    AtLeast,
    AtMost,
}

/// Prints the verdict line of `figure`: `value` against `target`, with
/// `shown` as the measured text (the ratio and what it is made of).
pub fn verdict(figure: &str, value: f64, want: Want, target: f64, shown: &str) -> bool {
    let (pass, op) = match want {
        Want::AtLeast => (value >= target, ">="),
        Want::AtMost => (value <= target, "<="),
    };
    println!(
        "VERDICT | {figure} | {shown} | {op} {target} | {}",
        if pass { "PASS" } else { "MISS" }
    );
    pass
}

/// A line for a figure that is printed beside its baseline, with no target.
pub fn printed(figure: &str, shown: &str) {
    println!("VERDICT | {figure} | {shown} | printed | -");
}
