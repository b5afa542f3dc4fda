//! The one list of plan names. [`Plan::from_name`], [`Plan::all`],
//! [`Plan::name`] and the command line's help all read [`NAMED_PLANS`], so a
//! new plan is named in one place.

use super::{Plan, RowSummary};

/// A plan of the paper by name, with default parameters.
pub struct NamedPlan {
    /// Its name on the command line and in reports (kebab-case; `from_name`
    /// also takes `_` for `-`).
    pub name: &'static str,
    /// Other names [`Plan::from_name`] accepts.
    pub aliases: &'static [&'static str],
    /// What the name does not say, for help texts (empty when it says it all).
    pub about: &'static str,
    /// Whether [`Plan::all`] (the verifier's and the test sweeps' list)
    /// holds it.
    pub swept: bool,
    build: fn() -> Plan,
}

impl NamedPlan {
    /// The plan with default parameters.
    pub fn plan(&self) -> Plan {
        (self.build)()
    }

    fn answers_to(&self, name: &str) -> bool {
        self.name == name || self.aliases.contains(&name)
    }
}

/// Every named plan. `mixture` is axial-vertical + axial-horizontal as in
/// section 3.3. The learned row-major summary is not swept: its support is
/// that of `axial-rowmajor`, only its span keys differ.
pub const NAMED_PLANS: &[NamedPlan] = &[
    NamedPlan {
        name: "fixed",
        aliases: &[],
        about: "",
        swept: true,
        build: || Plan::Fixed { block: None },
    },
    NamedPlan {
        name: "logsparse",
        aliases: &[],
        about: "",
        swept: true,
        build: || Plan::Logsparse,
    },
    NamedPlan {
        name: "axial-vertical",
        aliases: &["vertical"],
        about: "",
        swept: true,
        build: || Plan::AxialVertical { grid: None },
    },
    NamedPlan {
        name: "axial-horizontal",
        aliases: &["horizontal"],
        about: "",
        swept: true,
        build: || Plan::AxialHorizontal { grid: None },
    },
    NamedPlan {
        name: "axial-rowmajor",
        aliases: &["rowmajor", "axial"],
        about: "",
        swept: true,
        build: || Plan::AxialRowmajor {
            grid: None,
            summary: RowSummary::Pooled,
        },
    },
    NamedPlan {
        name: "axial-rowmajor-learned",
        aliases: &["rowmajor-learned", "axial-learned"],
        about: "the authors' learned row summary",
        swept: false,
        build: || Plan::AxialRowmajor {
            grid: None,
            summary: RowSummary::Learned,
        },
    },
    NamedPlan {
        name: "mixture",
        aliases: &[],
        about: "mean of vertical + horizontal",
        swept: true,
        build: || Plan::Mixture {
            plans: vec![
                Plan::AxialVertical { grid: None },
                Plan::AxialHorizontal { grid: None },
            ],
        },
    },
    NamedPlan {
        name: "mixture-joint",
        aliases: &["joint-mixture", "axial-mixture"],
        about: "the authors' one-softmax mixture",
        swept: true,
        build: || Plan::MixtureJoint { grid: None },
    },
    NamedPlan {
        name: "strided",
        aliases: &[],
        about: "README's example: residue classes mod s",
        swept: true,
        build: || Plan::Strided { stride: None },
    },
    NamedPlan {
        name: "learnable",
        aliases: &["routing"],
        about: "",
        swept: true,
        build: || Plan::Learnable { clusters: None },
    },
];

/// The names of [`NAMED_PLANS`], comma-separated.
pub fn plan_names() -> String {
    NAMED_PLANS
        .iter()
        .map(|p| p.name)
        .collect::<Vec<_>>()
        .join(", ")
}

/// The named plan `name` answers to (case-insensitive, `_` for `-`).
pub(super) fn by_name(name: &str) -> Option<&'static NamedPlan> {
    let name = name.to_ascii_lowercase().replace('_', "-");
    NAMED_PLANS.iter().find(|p| p.answers_to(&name))
}

/// The named plan of the same kind as `plan` (parameters aside).
pub(super) fn of(plan: &Plan) -> Option<&'static NamedPlan> {
    let kind = |p: &Plan| (std::mem::discriminant(p), p.row_summary());
    NAMED_PLANS.iter().find(|n| kind(&n.plan()) == kind(plan))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_name_and_alias_finds_its_plan_and_names_are_unique() {
        let mut seen = std::collections::HashSet::new();
        for p in NAMED_PLANS {
            for n in std::iter::once(&p.name).chain(p.aliases) {
                assert!(seen.insert(*n), "`{n}` is listed twice");
                assert_eq!(by_name(n).map(|q| q.name), Some(p.name));
                assert_eq!(by_name(&n.replace('-', "_")).map(|q| q.name), Some(p.name));
            }
            assert_eq!(of(&p.plan()).map(|q| q.name), Some(p.name));
        }
    }
}
