mod day2;
mod gather;
mod harness;
mod inventory;
mod output;
mod push;
mod shard;
mod verify;
