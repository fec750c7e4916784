#[path = "become.rs"]
mod become_; // `become` is a reserved word in Rust
mod container;
mod day2;
mod faults;
mod fuzz;
mod gather;
mod harness;
mod inventory;
mod links;
mod lxc;
mod output;
mod push;
mod shard;
mod verify;
