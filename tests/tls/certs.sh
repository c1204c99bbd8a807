#!/bin/sh
# Makes the certificates the TLS tests use, in DIR (ECDSA P-256 keys, made with the openssl CLI):
#   ca.pem ca.key          a test CA
#   server.pem server.key  signed by ca; valid for localhost, 127.0.0.1 and ::1
#   client.pem client.key  signed by ca; a client certificate (for mutual TLS)
#   other-ca.pem           another CA that signed nothing here (a wrong CA)
#   expired.pem expired.key  signed by ca for localhost, valid only in January 2020
#   wrongname.pem wrongname.key  signed by ca, valid only for other.example
# Usage: sh tests/tls/certs.sh DIR   (quiet; exit status 1 with openssl's output on failure)
set -e
dir=${1:?usage: certs.sh DIR}
mkdir -p "$dir"
cd "$dir"
log=$(pwd)/openssl.log
: >"$log"
run() { "$@" >>"$log" 2>&1 || { cat "$log" >&2; exit 1; }; }

key() { run openssl genpkey -algorithm EC -pkeyopt ec_paramgen_curve:P-256 -out "$1"; }

ca() { # name subject
    key "$1.key"
    run openssl req -x509 -new -key "$1.key" -out "$1.pem" -days 3650 -subj "/CN=$2" \
        -addext basicConstraints=critical,CA:TRUE -addext keyUsage=critical,keyCertSign,cRLSign
}

leaf() { # name subject san usage
    key "$1.key"
    run openssl req -new -key "$1.key" -out "$1.csr" -subj "/CN=$2"
    printf 'subjectAltName=%s\nextendedKeyUsage=%s\nbasicConstraints=CA:FALSE\n' "$3" "$4" >"$1.ext"
    run openssl x509 -req -in "$1.csr" -CA ca.pem -CAkey ca.key -CAcreateserial -days 825 \
        -extfile "$1.ext" -out "$1.pem"
}

ca ca "netsock test CA"
ca other-ca "netsock other CA"
leaf server localhost "DNS:localhost,IP:127.0.0.1,IP:::1" serverAuth
leaf client "netsock test client" "DNS:client.example" clientAuth
leaf wrongname other.example "DNS:other.example" serverAuth

# Expired: `openssl ca` is the one 3.0 command that takes start and end dates.
key expired.key
run openssl req -new -key expired.key -out expired.csr -subj "/CN=localhost"
mkdir -p ca.db
: >ca.db/index.txt
cat >ca.cnf <<CNF
[ca]
default_ca = test
[test]
dir = ca.db
database = ca.db/index.txt
new_certs_dir = ca.db
serial = ca.db/serial
certificate = ca.pem
private_key = ca.key
default_md = sha256
policy = any
copy_extensions = none
x509_extensions = ext
[any]
commonName = supplied
[ext]
subjectAltName = DNS:localhost,IP:127.0.0.1
extendedKeyUsage = serverAuth
CNF
echo 01 >ca.db/serial
run openssl ca -batch -config ca.cnf -in expired.csr -out expired.pem -notext \
    -startdate 20200101000000Z -enddate 20200201000000Z
