mod day2;
mod gather;
mod harness;
mod inventory;
mod push;
mod shard;
mod verify;
