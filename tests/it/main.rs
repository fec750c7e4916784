mod harness;
mod push;
