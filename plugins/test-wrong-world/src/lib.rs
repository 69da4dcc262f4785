//! A well-formed component of some other world: it exports nothing
//! seedgate knows, and `seedgate plugin check` must say so.

wit_bindgen::generate!({
    inline: "
        package example:other@1.0.0;
        interface greeter {
            greet: func(name: string) -> string;
        }
        world other {
            export greeter;
        }
    ",
});

struct Other;

impl exports::example::other::greeter::Guest for Other {
    fn greet(name: String) -> String {
        format!("hello {name}")
    }
}

export!(Other);
