//! `ns_tls`: TLS configurations for servers and clients (rustls inside), and what a TLS
//! connection tells its callbacks.

use std::ffi::{CStr, c_int};
use std::os::raw::c_char;

use super::boundary::write_text;
use super::conn::{ns_conn, try_conn};
use super::options::ns_options;
use super::result::code;
use crate::tls_config::{TlsSettings, read_pem_file};

/// A TLS configuration: a server's certificate and key, or a client's trusted roots, with
/// ALPN and mutual-TLS settings. Made by `ns_tls_server_new()`, `ns_tls_server_new_pem()` or
/// `ns_tls_client_new()`, set up with the `ns_tls_set_*()` functions, given to servers and
/// clients with `ns_options_set_tls()`, and freed by `ns_tls_free()` (at once if you like:
/// options, servers and clients keep what they need). TLS 1.2 and 1.3 with rustls's safe
/// defaults (crypto provider `ring`). Not thread-safe while being set up: use one `ns_tls`
/// from one thread at a time; once given to options it is never changed by netsock.
pub struct ns_tls {
    inner: TlsSettings,
}

/// A path argument as UTF-8 text, or `NS_ERR_INVALID`.
macro_rules! try_path {
    ($p:ident) => {{
        if $p.is_null() {
            invalid!(concat!("`", stringify!($p), "` is NULL"));
        }
        // SAFETY: checked for NULL; a NUL-terminated string by the header's contract.
        match unsafe { CStr::from_ptr($p) }.to_str() {
            Ok(s) => s,
            Err(_) => invalid!(concat!("`", stringify!($p), "` is not UTF-8")),
        }
    }};
}

/// Writes a new configuration to `*out`.
fn made(out: &mut *mut ns_tls, inner: crate::Result<TlsSettings>) -> c_int {
    let inner = ns_try!(inner);
    *out = Box::into_raw(Box::new(ns_tls { inner }));
    code(Ok(()))
}

/// A server's TLS configuration from PEM files: `cert_pem_file` holds the certificate chain
/// (leaf first), `key_pem_file` its private key (PKCS#8, PKCS#1 or SEC1). Written to `*out` on
/// success; free it with `ns_tls_free()`. `NS_ERR_TLS` for a file that cannot be read, holds
/// no certificate or key, or a key that does not match the certificate (`ns_last_error()`
/// says which); `NS_ERR_INVALID` for NULL. Any thread.
#[unsafe(no_mangle)]
pub extern "C" fn ns_tls_server_new(
    cert_pem_file: *const c_char,
    key_pem_file: *const c_char,
    out: *mut *mut ns_tls,
) -> c_int {
    ffi_panic_boundary! {
        let cert = try_path!(cert_pem_file);
        let key = try_path!(key_pem_file);
        let out = try_mut!(out);
        let cert = ns_try!(read_pem_file(cert, "certificate"));
        let key = ns_try!(read_pem_file(key, "key"));
        made(out, TlsSettings::server(&cert, &key))
    }
}

/// Like `ns_tls_server_new()`, from PEM text in memory: `cert_len` bytes at `cert_pem` and
/// `key_len` bytes at `key_pem` (copied: free them when this returns). Any thread.
#[unsafe(no_mangle)]
pub extern "C" fn ns_tls_server_new_pem(
    cert_pem: *const u8,
    cert_len: usize,
    key_pem: *const u8,
    key_len: usize,
    out: *mut *mut ns_tls,
) -> c_int {
    ffi_panic_boundary! {
        let cert = try_slice!(cert_pem, cert_len);
        let key = try_slice!(key_pem, key_len);
        let out = try_mut!(out);
        made(out, TlsSettings::server(cert, key))
    }
}

/// A client's TLS configuration trusting the CA certificates of the PEM file `ca_pem_file`,
/// or with NULL the system's roots (/etc/ssl/certs, or SSL_CERT_FILE / SSL_CERT_DIR). A
/// client connecting with it sends the host of its address as SNI and checks the server's
/// certificate against it (an IP address against the certificate's IP addresses; ":port"
/// against "localhost"). Written to `*out` on success; free it with `ns_tls_free()`.
/// `NS_ERR_TLS` for a file that cannot be read or holds no usable certificate, or no system
/// roots. Any thread.
#[unsafe(no_mangle)]
pub extern "C" fn ns_tls_client_new(ca_pem_file: *const c_char, out: *mut *mut ns_tls) -> c_int {
    ffi_panic_boundary! {
        let out = try_mut!(out);
        if ca_pem_file.is_null() {
            return made(out, TlsSettings::client(None));
        }
        let ca = ns_try!(read_pem_file(try_path!(ca_pem_file), "CA"));
        made(out, TlsSettings::client(Some(&ca)))
    }
}

/// Sets the ALPN protocols, comma-separated in order of preference ("h2,http/1.1"): offered
/// by a client, chosen from by a server (a client that offers protocols, none of them these,
/// fails its handshake with the no_application_protocol alert; one that offers none is
/// served without ALPN). "" clears them. Read the outcome with `ns_conn_alpn()`.
/// `NS_ERR_INVALID` for NULL or a protocol over 255 bytes. Applies to options set after.
/// Any thread, one at a time per `ns_tls`.
#[unsafe(no_mangle)]
pub extern "C" fn ns_tls_set_alpn(tls: *mut ns_tls, protocols: *const c_char) -> c_int {
    ffi_panic_boundary! {
        let tls = try_mut!(tls);
        code(tls.inner.set_alpn(try_path!(protocols)))
    }
}

/// Server only: requires every client to present a certificate that chains to a CA of the
/// PEM file `ca_pem_file` (mutual TLS); a client without one fails its handshake.
/// `NS_ERR_TLS` for an unreadable file or no usable certificate; `NS_ERR_INVALID` for NULL or
/// a client's configuration. Applies to options set after. Any thread, one at a time per
/// `ns_tls`.
#[unsafe(no_mangle)]
pub extern "C" fn ns_tls_set_client_ca(tls: *mut ns_tls, ca_pem_file: *const c_char) -> c_int {
    ffi_panic_boundary! {
        let tls = try_mut!(tls);
        let ca = ns_try!(read_pem_file(try_path!(ca_pem_file), "client CA"));
        code(tls.inner.set_client_ca(&ca))
    }
}

/// Client only: the certificate chain and key (PEM files) to present when a server asks for
/// one (mutual TLS). `NS_ERR_TLS` for unreadable files, no certificate or key, or a key that
/// does not match; `NS_ERR_INVALID` for NULL or a server's configuration. Applies to options
/// set after. Any thread, one at a time per `ns_tls`.
#[unsafe(no_mangle)]
pub extern "C" fn ns_tls_set_client_cert(
    tls: *mut ns_tls,
    cert_pem_file: *const c_char,
    key_pem_file: *const c_char,
) -> c_int {
    ffi_panic_boundary! {
        let tls = try_mut!(tls);
        let cert = ns_try!(read_pem_file(try_path!(cert_pem_file), "certificate"));
        let key = ns_try!(read_pem_file(try_path!(key_pem_file), "key"));
        code(tls.inner.set_client_cert(&cert, &key))
    }
}

/// Frees a configuration. Options, servers and clients it was given to keep working: they
/// hold their own reference to what was built from it. NULL is a no-op. Any thread, once no
/// other call on it runs.
#[unsafe(no_mangle)]
pub extern "C" fn ns_tls_free(tls: *mut ns_tls) {
    ffi_panic_boundary! {
        super::boundary::free_box(tls)
    }
}

/// Makes servers and clients started with these options speak TLS with `tls` as it is now
/// (built here: later `ns_tls_set_*()` calls do not reach these options; NULL turns TLS off).
/// A server's connections get `on_open` once their handshake is done; one that fails or does
/// not finish within the connect timeout (`ns_options_set_connect_timeout_ms()`, on servers
/// too) gets no callback at all, is counted in `tls_failures` of `ns_stats` and logged at
/// `NS_LOG_INFO`. A client (`ns_tcp_connect()` returns `NS_ERR_TLS` or `NS_ERR_TIMEOUT`;
/// `ns_tcp_connect_async()` calls `on_close` with it, without `on_open`) fails the same way.
/// With TLS 1.3 a server refusing the client's certificate is known only after the
/// client's handshake is done: the client gets `on_open`, then `on_close(NS_ERR_TLS)`.
/// `ns_conn_close()` sends close_notify, and so does a server's stop (not `ns_client_free()`)
/// for each connection with nothing left to write (one cut off by the drain timeout is not);
/// the peer's close_notify is an orderly end
/// (`NS_OK`), and its TCP end without one after the handshake is `NS_ERR_CLOSED`. Callbacks
/// see plaintext; framing, limits and backpressure apply to it as without TLS (the write
/// buffer counts the sealed bytes waiting for the socket; `bytes_in` and `bytes_out` of
/// `ns_stats` count the bytes on the wire). `NS_ERR_INVALID` for NULL `opts`; a server given a
/// client's configuration or the reverse fails to start with `NS_ERR_INVALID`. Any thread,
/// one at a time per `ns_options` and per `ns_tls`.
#[unsafe(no_mangle)]
pub extern "C" fn ns_options_set_tls(opts: *mut ns_options, tls: *const ns_tls) -> c_int {
    ffi_panic_boundary! {
        let opts = try_mut!(opts);
        // SAFETY: NULL or a live configuration, per the header's rules.
        opts.opts.tls = match unsafe { tls.as_ref() } {
            Some(t) => Some(ns_try!(t.inner.build())),
            None => None,
        };
        code(Ok(()))
    }
}

/// Writes the ALPN protocol agreed on in the handshake as NUL-terminated text into `buf` of
/// `cap` bytes: "" without TLS or ALPN. `NS_OK`; `NS_ERR_TRUNCATED` (nothing written) if it
/// does not fit (256 bytes fit any); `NS_ERR_INVALID` for NULL. Loop thread only (inside a
/// callback).
#[unsafe(no_mangle)]
pub extern "C" fn ns_conn_alpn(conn: *const ns_conn, buf: *mut c_char, cap: usize) -> c_int {
    ffi_panic_boundary! {
        let c = try_conn!(conn);
        let alpn = String::from_utf8_lossy(&c.alpn().unwrap_or_default()).into_owned();
        write_text(buf, cap, &alpn)
    }
}

/// Writes the host name a TLS client asked this server for (SNI) as NUL-terminated text into
/// `buf` of `cap` bytes: "" if it sent none (an IP address is never sent as SNI), without
/// TLS, and on a client's connection. `NS_OK`; `NS_ERR_TRUNCATED` (nothing written) if it does
/// not fit (256 bytes fit any); `NS_ERR_INVALID` for NULL. Loop thread only (inside a
/// callback).
#[unsafe(no_mangle)]
pub extern "C" fn ns_conn_server_name(conn: *const ns_conn, buf: *mut c_char, cap: usize) -> c_int {
    ffi_panic_boundary! {
        let c = try_conn!(conn);
        write_text(buf, cap, &c.server_name().unwrap_or_default())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::ptr;

    #[test]
    fn null_arguments_are_invalid() {
        let mut out = ptr::null_mut();
        let invalid = super::super::result::ns_result::NS_ERR_INVALID as c_int;
        assert_eq!(ns_tls_server_new(ptr::null(), ptr::null(), &mut out), invalid);
        assert_eq!(ns_tls_server_new_pem(ptr::null(), 1, ptr::null(), 0, &mut out), invalid);
        assert_eq!(ns_tls_set_alpn(ptr::null_mut(), c"h2".as_ptr()), invalid);
        assert_eq!(ns_options_set_tls(ptr::null_mut(), ptr::null()), invalid);
        assert_eq!(ns_conn_alpn(ptr::null(), ptr::null_mut(), 0), invalid);
        assert!(out.is_null());
        ns_tls_free(ptr::null_mut());
    }

    #[test]
    fn a_missing_file_is_a_tls_error() {
        let mut out = ptr::null_mut();
        let rc = ns_tls_server_new(
            c"/nonexistent/cert.pem".as_ptr(),
            c"/nonexistent/key.pem".as_ptr(),
            &mut out,
        );
        assert_eq!(rc, super::super::result::ns_result::NS_ERR_TLS as c_int);
    }
}
