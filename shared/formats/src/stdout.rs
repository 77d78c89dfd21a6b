//! What the tools print to stdout: a reader that closed its end (`| head`) ends the output,
//! not the tool (`print!` would panic on the broken pipe).

use std::io::Write;

/// Writes `text` to stdout; a closed pipe is not an error, any other failure is.
pub fn print(text: &str) -> std::io::Result<()> {
    write_to(&mut std::io::stdout().lock(), text)
}

fn write_to(out: &mut impl Write, text: &str) -> std::io::Result<()> {
    match out.write_all(text.as_bytes()).and_then(|()| out.flush()) {
        Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => Ok(()),
        r => r,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    struct Closed(std::io::ErrorKind);
    impl Write for Closed {
        fn write(&mut self, _: &[u8]) -> std::io::Result<usize> {
            Err(self.0.into())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    #[test]
    fn a_broken_pipe_ends_the_output_other_errors_stay() {
        assert!(write_to(&mut Closed(std::io::ErrorKind::BrokenPipe), "x").is_ok());
        assert!(write_to(&mut Closed(std::io::ErrorKind::StorageFull), "x").is_err());
        let mut v = Vec::new();
        write_to(&mut v, "text").unwrap();
        assert_eq!(v, b"text");
    }
}
