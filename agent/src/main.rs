//! The bosun binary: parses flags and wires the agent together.

fn main() {
    println!("{}", bosun::version::version_string());
}
