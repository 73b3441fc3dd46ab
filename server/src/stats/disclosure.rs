//! Disclosure control: what of a quarter's tables may leave the city.
//!
//! **Suppression.** Cells from 1 to k−1 are hidden (primary suppression); zeros are shown. Then
//! an audit asks, for every hidden cell, the smallest and largest value it could have given
//! everything published and the additive relations between cells ([`super::relations`]), with
//! every hidden cell at least 1 (a reader knows hidden cells are not zero). Those two numbers
//! come from solving linear programs. If they leave fewer than two whole values, the cell could
//! be worked out, and one more cell is hidden (secondary suppression): the smallest published
//! non-zero cell that shares a relation with it. Repeat until no hidden cell is exposed. Because
//! cells are identified by what they count, not by table, a margin shared by two tables is
//! hidden in both or in neither.
//!
//! **Noise.** Each inner cell gets discrete Laplace noise drawn with exact rational arithmetic
//! (the `prio` crate's sampler, after Canonne, Kamath and Steinke); totals are sums of noisy
//! cells. One person adds one to one inner cell of each of the four tables, so the L1
//! sensitivity is 4 and the scale is 4/ε. Each release spends ε from the city's yearly budget.

use std::collections::{BTreeMap, BTreeSet};

use microlp::{ComparisonOp, LinearExpr, OptimizationDirection, Problem};
use prio::dp::distributions::DiscreteLaplace;
use prio::dp::Rational;
use rand_dp::distr::Distribution;
use rand_dp::Rng;
use serde::{Deserialize, Serialize};

use super::{spec, CellKey, CellPos, Relation, TABLES};

/// The national disclosure policy.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Policy {
    /// `suppression` or `noise`.
    pub mode: String,
    /// Suppression threshold: cells from 1 to k−1 are hidden.
    pub k: i64,
    /// ε per release, in thousandths.
    pub epsilon_milli: i64,
    /// Yearly ε cap per city, in thousandths.
    pub year_cap_milli: i64,
}

impl Default for Policy {
    fn default() -> Self {
        Policy {
            mode: "suppression".into(),
            k: 5,
            epsilon_milli: 500,
            year_cap_milli: 2000,
        }
    }
}

impl Policy {
    /// Checks the policy, naming the field at fault.
    pub fn check(&self) -> Result<(), super::InvalidField> {
        let bad = |field, message: String| Err(super::InvalidField { field, message });
        match self.mode.as_str() {
            "suppression" | "noise" => {}
            other => return bad("mode", format!("{other:?} is not suppression or noise")),
        }
        if !(3..=100).contains(&self.k) {
            return bad("k", format!("{} is outside 3 to 100", self.k));
        }
        if !(10..=10_000).contains(&self.epsilon_milli) {
            return bad(
                "epsilon_milli",
                format!("{} is outside 10 to 10000", self.epsilon_milli),
            );
        }
        if !(10..=100_000).contains(&self.year_cap_milli) {
            return bad(
                "year_cap_milli",
                format!("{} is outside 10 to 100000", self.year_cap_milli),
            );
        }
        Ok(())
    }
}

/// How a published cell stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum CellStatus {
    Exact,
    Suppressed,
    Noisy,
}

/// Why a cell is hidden.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Reason {
    Primary,
    Secondary,
}

/// One cell as it would leave the city.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ProtectedCell {
    pub pos: CellPos,
    /// `None` when suppressed.
    pub value: Option<i64>,
    pub status: CellStatus,
    /// Standard deviation of the noise, for noisy cells.
    pub sd: f64,
    /// Why it is hidden, for suppressed cells (shown in previews; not published).
    pub reason: Option<Reason>,
}

/// The smallest and largest value a hidden cell can take (`None` for no upper limit).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Range {
    pub min: f64,
    pub max: Option<f64>,
}

impl Range {
    /// Whether the range leaves fewer than two whole values: the cell can be worked out.
    pub fn is_exposed(&self) -> bool {
        match self.max {
            None => false,
            Some(max) => (max + 1e-6).floor() - (self.min - 1e-6).ceil() < 1.0,
        }
    }
}

/// The range of every hidden cell given the published ones, by linear programming.
pub fn audit(
    values: &BTreeMap<CellKey, i64>,
    hidden: &BTreeSet<CellKey>,
    relations: &[Relation],
) -> BTreeMap<CellKey, Range> {
    let keys: Vec<&CellKey> = values.keys().collect();
    let index: BTreeMap<&CellKey, usize> = keys.iter().enumerate().map(|(i, k)| (*k, i)).collect();
    let solve = |target: &CellKey, direction: OptimizationDirection| -> Option<f64> {
        let mut problem = Problem::new(direction);
        let vars: Vec<_> = keys
            .iter()
            .map(|key| {
                let objective = if *key == target { 1.0 } else { 0.0 };
                if hidden.contains(*key) {
                    problem.add_var(objective, (1.0, f64::INFINITY))
                } else {
                    let v = values[*key] as f64;
                    problem.add_var(objective, (v, v))
                }
            })
            .collect();
        for (total, parts) in relations {
            let mut expr = LinearExpr::empty();
            expr.add(vars[index[total]], 1.0);
            for part in parts {
                expr.add(vars[index[part]], -1.0);
            }
            problem.add_constraint(expr, ComparisonOp::Eq, 0.0);
        }
        match problem.solve() {
            Ok(outcome) => outcome.solution().map(|s| s.objective()),
            Err(microlp::Error::Unbounded) => None,
            // Infeasible cannot happen for the true counts; treat as unknown (not exposed).
            Err(_) => None,
        }
    };
    hidden
        .iter()
        .map(|key| {
            let min = solve(key, OptimizationDirection::Minimize).unwrap_or(1.0);
            let max = solve(key, OptimizationDirection::Maximize);
            (key.clone(), Range { min, max })
        })
        .collect()
}

/// The cells to hide so that small counts are hidden and none can be worked out.
pub fn suppress(
    values: &BTreeMap<CellKey, i64>,
    relations: &[Relation],
    k: i64,
) -> BTreeMap<CellKey, Reason> {
    let mut hidden: BTreeMap<CellKey, Reason> = values
        .iter()
        .filter(|(_, v)| (1..k).contains(*v))
        .map(|(key, _)| (key.clone(), Reason::Primary))
        .collect();
    // Each round hides one more cell, so this ends after at most one round per cell.
    for _ in 0..=values.len() {
        let set: BTreeSet<CellKey> = hidden.keys().cloned().collect();
        let ranges = audit(values, &set, relations);
        let Some((exposed, _)) = ranges.iter().find(|(_, range)| range.is_exposed()) else {
            break;
        };
        let published_nonzero = |key: &CellKey| !hidden.contains_key(key) && values[key] > 0;
        // Prefer an inner cell (a long key: totals are worth more to readers), the smallest first,
        // in a relation with the exposed cell.
        let neighbours: BTreeSet<&CellKey> = relations
            .iter()
            .filter(|(total, parts)| total == exposed || parts.contains(exposed))
            .flat_map(|(total, parts)| std::iter::once(total).chain(parts.iter()))
            .filter(|key| published_nonzero(key))
            .collect();
        let choose = |candidates: Vec<&CellKey>| {
            candidates
                .into_iter()
                .min_by_key(|key| (std::cmp::Reverse(key.len()), values[*key], (*key).clone()))
                .cloned()
        };
        let pick = choose(neighbours.into_iter().collect())
            .or_else(|| choose(values.keys().filter(|key| published_nonzero(key)).collect()));
        match pick {
            Some(key) => {
                hidden.insert(key, Reason::Secondary);
            }
            None => break,
        }
    }
    hidden
}

/// Protects a quarter's exact cells by suppression.
pub fn protect_by_suppression(cells: &[(CellPos, i64)], k: i64) -> Vec<ProtectedCell> {
    let keyed: Vec<(CellKey, &CellPos, i64)> = cells
        .iter()
        .map(|(pos, v)| (pos.key(spec(&pos.table).expect("known table")), pos, *v))
        .collect();
    let values: BTreeMap<CellKey, i64> =
        keyed.iter().map(|(key, _, v)| (key.clone(), *v)).collect();
    let hidden = suppress(&values, &super::relations(), k);
    keyed
        .into_iter()
        .map(|(key, pos, v)| match hidden.get(&key) {
            Some(reason) => ProtectedCell {
                pos: pos.clone(),
                value: None,
                status: CellStatus::Suppressed,
                sd: 0.0,
                reason: Some(*reason),
            },
            None => ProtectedCell {
                pos: pos.clone(),
                value: Some(v),
                status: CellStatus::Exact,
                sd: 0.0,
                reason: None,
            },
        })
        .collect()
}

/// The L1 sensitivity of a release: one person is in one inner cell of every table.
pub const SENSITIVITY: u64 = TABLES.len() as u64;

/// The discrete Laplace noise for a release with `epsilon_milli`: scale 4/ε.
pub fn noise_distribution(epsilon_milli: i64) -> DiscreteLaplace {
    let scale = Rational::from_unsigned(SENSITIVITY * 1000, epsilon_milli.max(1) as u64)
        .expect("non-zero denominator");
    DiscreteLaplace::new(scale).expect("non-zero scale")
}

/// The variance of discrete Laplace noise with scale `t`: 2e^{-1/t} / (1 − e^{-1/t})².
pub fn noise_variance(epsilon_milli: i64) -> f64 {
    let t = SENSITIVITY as f64 * 1000.0 / epsilon_milli as f64;
    let q = (-1.0 / t).exp();
    2.0 * q / (1.0 - q).powi(2)
}

/// Protects a quarter's exact cells by noise on the inner cells; totals add up the noisy cells.
pub fn protect_by_noise<R: Rng + ?Sized>(
    cells: &[(CellPos, i64)],
    epsilon_milli: i64,
    rng: &mut R,
) -> Vec<ProtectedCell> {
    let distribution = noise_distribution(epsilon_milli);
    let variance = noise_variance(epsilon_milli);
    let mut noisy: BTreeMap<CellPos, i64> = BTreeMap::new();
    for (pos, v) in cells {
        if pos.is_inner(spec(&pos.table).expect("known table")) {
            let noise: i64 = distribution.sample(rng).to_string().parse().unwrap_or(0);
            noisy.insert(pos.clone(), v + noise);
        }
    }
    cells
        .iter()
        .map(|(pos, _)| {
            let spec = spec(&pos.table).expect("known table");
            let parts: Vec<i64> = noisy
                .iter()
                .filter(|(p, _)| p.table == pos.table)
                .filter(|(p, _)| pos.row.is_empty() || p.row == pos.row)
                .filter(|(p, _)| pos.col.is_empty() || spec.cols.is_none() || p.col == pos.col)
                .map(|(_, v)| *v)
                .collect();
            ProtectedCell {
                pos: pos.clone(),
                value: Some(parts.iter().sum()),
                status: CellStatus::Noisy,
                sd: (variance * parts.len() as f64).sqrt(),
                reason: None,
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::super::{relations, tabulate, SupportRecord};
    use super::*;
    use proptest::prelude::*;
    use rand_dp::SeedableRng;

    /// For each cell of a 2 × 3 table with margins, the whole values it takes in some filling
    /// of the hidden inner cells (each from 1 to `limit`) that agrees with every published cell
    /// (hidden totals must be at least 1). Plain enumeration, row by row: a check that shares
    /// nothing with the linear programs above.
    fn possible_values(
        inner: &[i64; 6],
        hidden: &BTreeMap<CellKey, Reason>,
        limit: i64,
    ) -> BTreeMap<CellKey, BTreeSet<i64>> {
        // Cells by index: inner (r, c) at 3r + c, row totals at 6 + r, column totals at 8 + c,
        // the grand total at 11.
        let key = |i: usize| {
            let (r, c) = match i {
                0..=5 => (Some(i / 3), Some(i % 3)),
                6 | 7 => (Some(i - 6), None),
                8..=10 => (None, Some(i - 8)),
                _ => (None, None),
            };
            let mut k = Vec::new();
            if let Some(r) = r {
                k.push(("r".to_string(), r.to_string()));
            }
            if let Some(c) = c {
                k.push(("s".to_string(), c.to_string()));
            }
            k
        };
        let hidden_at: Vec<bool> = (0..12).map(|i| hidden.contains_key(&key(i))).collect();
        let fill = |cells: &[i64; 6]| -> [i64; 12] {
            let mut all = [0i64; 12];
            all[..6].copy_from_slice(cells);
            for r in 0..2 {
                all[6 + r] = (0..3).map(|c| cells[3 * r + c]).sum();
            }
            for c in 0..3 {
                all[8 + c] = cells[c] + cells[3 + c];
            }
            all[11] = cells.iter().sum();
            all
        };
        let truth = fill(inner);
        let choices: Vec<Vec<i64>> = (0..6)
            .map(|i| {
                if hidden_at[i] {
                    (1..=limit).collect()
                } else {
                    vec![inner[i]]
                }
            })
            .collect();
        // Bit v of seen[i] is set when cell i can be v.
        let mut seen = [0u128; 12];
        let mut cells = [0i64; 6];
        let mut counters = [0usize; 6];
        loop {
            for i in 0..6 {
                cells[i] = choices[i][counters[i]];
            }
            let all = fill(&cells);
            if (6..12).all(|i| {
                if hidden_at[i] {
                    all[i] >= 1
                } else {
                    all[i] == truth[i]
                }
            }) {
                for i in 0..12 {
                    seen[i] |= 1u128 << all[i];
                }
            }
            let mut i = 0;
            loop {
                if i == 6 {
                    return (0..12)
                        .map(|i| {
                            (
                                key(i),
                                (0..128)
                                    .filter(|v| seen[i] >> v & 1 == 1)
                                    .map(|v| v as i64)
                                    .collect(),
                            )
                        })
                        .collect();
                }
                counters[i] += 1;
                if counters[i] < choices[i].len() {
                    break;
                }
                counters[i] = 0;
                i += 1;
            }
        }
    }

    /// A small 2 × 3 table with margins, as keys and relations.
    fn small_table(inner: &[i64; 6]) -> (BTreeMap<CellKey, i64>, Vec<Relation>) {
        let key = |r: Option<usize>, c: Option<usize>| {
            let mut k = Vec::new();
            if let Some(r) = r {
                k.push(("r".to_string(), r.to_string()));
            }
            if let Some(c) = c {
                k.push(("s".to_string(), c.to_string()));
            }
            k
        };
        let mut values = BTreeMap::new();
        for r in 0..2 {
            for c in 0..3 {
                values.insert(key(Some(r), Some(c)), inner[r * 3 + c]);
            }
            values.insert(key(Some(r), None), (0..3).map(|c| inner[r * 3 + c]).sum());
        }
        for c in 0..3 {
            values.insert(key(None, Some(c)), (0..2).map(|r| inner[r * 3 + c]).sum());
        }
        values.insert(key(None, None), inner.iter().sum());
        let mut relations = Vec::new();
        for r in 0..2 {
            relations.push((
                key(Some(r), None),
                (0..3).map(|c| key(Some(r), Some(c))).collect(),
            ));
        }
        for c in 0..3 {
            relations.push((
                key(None, Some(c)),
                (0..2).map(|r| key(Some(r), Some(c))).collect(),
            ));
        }
        relations.push((
            key(None, None),
            (0..2).map(|r| key(Some(r), None)).collect(),
        ));
        relations.push((
            key(None, None),
            (0..3).map(|c| key(None, Some(c))).collect(),
        ));
        (values, relations)
    }

    proptest! {
        #![proptest_config(ProptestConfig { cases: 64, .. ProptestConfig::default() })]

        /// No hidden cell of a random table has only one possible value.
        #[test]
        fn no_hidden_cell_can_be_solved_for(inner in proptest::array::uniform6(0i64..7)) {
            let (values, relations) = small_table(&inner);
            let hidden = suppress(&values, &relations, 3);
            for (key, value) in &values {
                if (1..3).contains(value) {
                    prop_assert!(hidden.contains_key(key), "small cell {key:?} shown");
                }
                if hidden.contains_key(key) {
                    prop_assert!(*value > 0, "a zero was hidden");
                }
            }
            let limit = inner.iter().copied().max().unwrap_or(0) + 2;
            let possible = possible_values(&inner, &hidden, limit);
            for key in hidden.keys() {
                let values_of_key = possible.get(key).cloned().unwrap_or_default();
                prop_assert!(values_of_key.contains(&values[key]), "the true value of {key:?} must be possible");
                prop_assert!(values_of_key.len() >= 2, "{key:?} = {} is the only possible value", values[key]);
            }
        }
    }

    #[test]
    fn a_single_small_cell_pulls_in_enough_others() {
        // One cell of 1 in an otherwise large table: hiding it alone would let its row total
        // give it away, so at least three more cells must go.
        let (values, relations) = small_table(&[1, 10, 12, 9, 11, 13]);
        let hidden = suppress(&values, &relations, 3);
        assert_eq!(
            hidden.values().filter(|r| **r == Reason::Primary).count(),
            1
        );
        assert!(hidden.len() >= 4, "{hidden:?}");
        for range in audit(&values, &hidden.keys().cloned().collect(), &relations).values() {
            assert!(!range.is_exposed());
        }
    }

    #[test]
    fn shared_margins_are_hidden_in_every_table_alike() {
        let mut records = Vec::new();
        for (i, (sex, exploitation, age)) in [
            ("female", "sexual", "25-34"),
            ("female", "sexual", "18-24"),
            ("female", "sexual", "35-44"),
            ("female", "sexual", "12-17"),
            ("female", "sexual", "25-34"),
            ("female", "sexual", "25-34"),
            ("male", "forced_labour", "35-44"),
            ("male", "forced_labour", "45-54"),
            ("male", "forced_labour", "25-34"),
            ("male", "forced_labour", "25-34"),
            ("male", "forced_labour", "25-34"),
            ("male", "begging", "55-64"),
        ]
        .iter()
        .enumerate()
        {
            records.push(SupportRecord {
                quarter: "2026-Q1".into(),
                sex: sex.to_string(),
                age_band: age.to_string(),
                citizenship: "non_eu".into(),
                exploitation: exploitation.to_string(),
                referral_source: "police".into(),
                person_ref: format!("p{i}"),
            });
        }
        let cells = protect_by_suppression(&tabulate(&records), 5);
        let status = |table: &str, row: &str, col: &str| {
            cells
                .iter()
                .find(|c| c.pos.table == table && c.pos.row == row && c.pos.col == col)
                .unwrap()
                .status
        };
        // The begging row total (1) is the same cell in both exploitation tables.
        assert_eq!(
            status("exploitation_by_sex", "begging", ""),
            CellStatus::Suppressed
        );
        assert_eq!(
            status("exploitation_by_age_group", "begging", ""),
            CellStatus::Suppressed
        );
        for cell in &cells {
            let twin = cells
                .iter()
                .filter(|c| {
                    c.pos.key(spec(&c.pos.table).unwrap())
                        == cell.pos.key(spec(&cell.pos.table).unwrap())
                })
                .map(|c| c.status)
                .collect::<BTreeSet<_>>();
            assert_eq!(twin.len(), 1, "{:?} differs between tables", cell.pos);
        }
        // And the audit over all four tables together finds nothing exposed.
        let values: BTreeMap<CellKey, i64> = tabulate(&records)
            .iter()
            .map(|(p, v)| (p.key(spec(&p.table).unwrap()), *v))
            .collect();
        let hidden: BTreeSet<CellKey> = cells
            .iter()
            .filter(|c| c.status == CellStatus::Suppressed)
            .map(|c| c.pos.key(spec(&c.pos.table).unwrap()))
            .collect();
        for (key, range) in audit(&values, &hidden, &relations()) {
            assert!(!range.is_exposed(), "{key:?} is exposed: {range:?}");
        }
    }

    #[test]
    fn noise_has_the_mean_and_variance_of_the_mechanism() {
        let mut rng = rand_dp::rngs::StdRng::seed_from_u64(20261128);
        let epsilon_milli = 1000;
        let distribution = noise_distribution(epsilon_milli);
        let n = 20_000;
        let draws: Vec<f64> = (0..n)
            .map(|_| {
                distribution
                    .sample(&mut rng)
                    .to_string()
                    .parse::<f64>()
                    .unwrap()
            })
            .collect();
        let mean = draws.iter().sum::<f64>() / n as f64;
        let variance = draws.iter().map(|x| (x - mean).powi(2)).sum::<f64>() / (n - 1) as f64;
        let expected = noise_variance(epsilon_milli);
        // Scale 4: variance about 31.5. The mean's standard error is sqrt(31.5/20000) ≈ 0.04.
        assert!(mean.abs() < 0.2, "mean {mean}");
        assert!(
            (variance / expected - 1.0).abs() < 0.05,
            "variance {variance}, expected {expected}"
        );
        assert!(draws.iter().all(|x| x.fract() == 0.0), "integers only");
    }

    #[test]
    fn noisy_totals_are_sums_of_noisy_cells() {
        let records = vec![SupportRecord {
            quarter: "2026-Q1".into(),
            sex: "female".into(),
            age_band: "18-24".into(),
            citizenship: "swedish".into(),
            exploitation: "sexual".into(),
            referral_source: "police".into(),
            person_ref: "a".into(),
        }];
        let mut rng = rand_dp::rngs::StdRng::seed_from_u64(7);
        let cells = protect_by_noise(&tabulate(&records), 500, &mut rng);
        let value = |t: &str, r: &str, c: &str| {
            cells
                .iter()
                .find(|x| x.pos.table == t && x.pos.row == r && x.pos.col == c)
                .unwrap()
                .value
                .unwrap()
        };
        let row: i64 = super::super::SEXES
            .iter()
            .map(|s| value("exploitation_by_sex", "sexual", s))
            .sum();
        assert_eq!(value("exploitation_by_sex", "sexual", ""), row);
        assert!(cells
            .iter()
            .all(|c| c.status == CellStatus::Noisy && c.sd > 0.0));
    }
}
