//! Claims to be an origin plugin but exports an `origin` interface that
//! lacks `plan-read` and `list-objects` and has the wrong `stat`:
//! `seedgate plugin check` must name each missing export.

wit_bindgen::generate!({
    inline: "
        package seedgate:plugin@0.1.0;
        interface origin {
            schemes: func() -> list<string>;
            stat: func(url: string) -> u64;
        }
        world incomplete {
            export origin;
        }
    ",
});

struct Incomplete;

impl exports::seedgate::plugin::origin::Guest for Incomplete {
    fn schemes() -> Vec<String> {
        vec!["http".into()]
    }

    fn stat(_url: String) -> u64 {
        0
    }
}

export!(Incomplete);
