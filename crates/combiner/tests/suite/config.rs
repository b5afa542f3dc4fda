//! Plans are data: they round-trip through TOML and reject unknown keys.

use combiner::{Grid, Plan, RowSummary};

#[derive(serde::Serialize, serde::Deserialize, PartialEq, Debug)]
struct Wrapper {
    plan: Plan,
}

#[test]
fn every_plan_round_trips_through_toml() {
    let mut plans: Vec<Plan> = Plan::all().into_iter().map(|(_, p)| p).collect();
    plans.push(Plan::Fixed { block: Some(9) });
    plans.push(Plan::AxialRowmajor {
        grid: Some(Grid { rows: 32, cols: 96 }),
        summary: RowSummary::Pooled,
    });
    plans.push(Plan::AxialRowmajor {
        grid: Some(Grid { rows: 4, cols: 5 }),
        summary: RowSummary::Learned,
    });
    plans.push(Plan::MixtureJoint {
        grid: Some(Grid { rows: 3, cols: 7 }),
    });
    for plan in plans {
        let w = Wrapper { plan };
        let text = toml::to_string(&w).unwrap();
        let back: Wrapper = toml::from_str(&text).unwrap_or_else(|e| panic!("{text}: {e}"));
        assert_eq!(back, w, "{text}");
    }
}

#[test]
fn unknown_keys_and_kinds_are_errors() {
    let err = toml::from_str::<Wrapper>("[plan]\nkind = \"fixed\"\nblok = 8\n").unwrap_err();
    assert!(err.to_string().contains("blok"), "{err}");
    let err = toml::from_str::<Wrapper>("[plan]\nkind = \"fixd\"\n").unwrap_err();
    assert!(err.to_string().contains("fixd"), "{err}");
    let ok: Wrapper =
        toml::from_str("[plan]\nkind = \"axial_vertical\"\ngrid = { rows = 4, cols = 8 }\n")
            .unwrap();
    assert_eq!(
        ok.plan,
        Plan::AxialVertical {
            grid: Some(Grid { rows: 4, cols: 8 })
        }
    );
}

#[test]
fn bad_parameters_are_clear_errors() {
    let err = Plan::AxialVertical {
        grid: Some(Grid { rows: 3, cols: 3 }),
    }
    .layout(10, combiner::Mode::Lm)
    .unwrap_err();
    assert_eq!(
        err.to_string(),
        "grid 3x3 holds 9 positions but the sequence has 10"
    );
    assert!(Plan::Fixed { block: Some(0) }
        .layout(4, combiner::Mode::Lm)
        .is_err());
    assert!(Plan::from_name("nope")
        .unwrap_err()
        .to_string()
        .contains("fixed, logsparse"));
}
