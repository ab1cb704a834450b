pub mod playlist;
pub mod token;
