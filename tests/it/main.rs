mod day2;
mod faults;
mod gather;
mod harness;
mod inventory;
mod push;
mod shard;
mod verify;
