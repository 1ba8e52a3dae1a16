package main

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"fmt"
	"math/big"
	"net"
	"os"
	"path/filepath"
	"time"

	"k8s.io/client-go/tools/clientcmd"
	clientcmdapi "k8s.io/client-go/tools/clientcmd/api"
)

// pki holds the per-run certificate authority and what it signed. Every run
// generates fresh keys; nothing here is meant to outlive the data directory.
type pki struct {
	caCert, caKey           []byte // PEM
	caCertFile              string
	servingCert, servingKey string // files
	saKeyFile               string // service-account signing key (RSA, PEM)
	adminCert, adminKey     []byte // CN=packlight-admin, O=system:masters
	kcmCert, kcmKey         []byte // CN=system:kube-controller-manager, O=system:masters
}

func writePKI(dataDir string) (*pki, error) {
	dir := filepath.Join(dataDir, "pki")
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, err
	}
	now := time.Now().Add(-time.Hour)
	caKey, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, err
	}
	caTmpl := &x509.Certificate{
		SerialNumber:          serial(),
		Subject:               pkix.Name{CommonName: "packlight-testenv-ca"},
		NotBefore:             now,
		NotAfter:              now.Add(10 * 365 * 24 * time.Hour),
		KeyUsage:              x509.KeyUsageCertSign | x509.KeyUsageDigitalSignature | x509.KeyUsageCRLSign,
		BasicConstraintsValid: true,
		IsCA:                  true,
	}
	caDER, err := x509.CreateCertificate(rand.Reader, caTmpl, caTmpl, caKey.Public(), caKey)
	if err != nil {
		return nil, err
	}
	ca, err := x509.ParseCertificate(caDER)
	if err != nil {
		return nil, err
	}
	p := &pki{caCert: certPEM(caDER)}
	if p.caKey, err = keyPEM(caKey); err != nil {
		return nil, err
	}

	leaf := func(cn string, orgs []string, usage x509.ExtKeyUsage, dns []string, ips []net.IP) ([]byte, []byte, error) {
		key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
		if err != nil {
			return nil, nil, err
		}
		tmpl := &x509.Certificate{
			SerialNumber:          serial(),
			Subject:               pkix.Name{CommonName: cn, Organization: orgs},
			NotBefore:             now,
			NotAfter:              now.Add(365 * 24 * time.Hour),
			KeyUsage:              x509.KeyUsageDigitalSignature | x509.KeyUsageKeyEncipherment,
			ExtKeyUsage:           []x509.ExtKeyUsage{usage},
			BasicConstraintsValid: true,
			DNSNames:              dns,
			IPAddresses:           ips,
		}
		der, err := x509.CreateCertificate(rand.Reader, tmpl, ca, key.Public(), caKey)
		if err != nil {
			return nil, nil, err
		}
		k, err := keyPEM(key)
		return certPEM(der), k, err
	}

	servingCert, servingKey, err := leaf("kube-apiserver", nil, x509.ExtKeyUsageServerAuth,
		[]string{"localhost", "kubernetes", "kubernetes.default", "kubernetes.default.svc", "kubernetes.default.svc.cluster.local"},
		[]net.IP{net.IPv4(127, 0, 0, 1), net.IPv6loopback, net.IPv4(10, 96, 0, 1)})
	if err != nil {
		return nil, err
	}
	if p.adminCert, p.adminKey, err = leaf("packlight-admin", []string{"system:masters"}, x509.ExtKeyUsageClientAuth, nil, nil); err != nil {
		return nil, err
	}
	if p.kcmCert, p.kcmKey, err = leaf("system:kube-controller-manager", []string{"system:masters"}, x509.ExtKeyUsageClientAuth, nil, nil); err != nil {
		return nil, err
	}

	saKey, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		return nil, err
	}
	saPEM := pem.EncodeToMemory(&pem.Block{Type: "RSA PRIVATE KEY", Bytes: x509.MarshalPKCS1PrivateKey(saKey)})

	p.caCertFile = filepath.Join(dir, "ca.crt")
	p.servingCert = filepath.Join(dir, "apiserver.crt")
	p.servingKey = filepath.Join(dir, "apiserver.key")
	p.saKeyFile = filepath.Join(dir, "sa.key")
	for path, data := range map[string][]byte{
		p.caCertFile:                 p.caCert,
		filepath.Join(dir, "ca.key"): p.caKey,
		p.servingCert:                servingCert,
		p.servingKey:                 servingKey,
		p.saKeyFile:                  saPEM,
	} {
		if err := os.WriteFile(path, data, 0o600); err != nil {
			return nil, err
		}
	}
	return p, nil
}

// writeKubeconfigs writes admin.kubeconfig (for people and tests) and
// controller-manager.kubeconfig, and returns the admin one's path.
func writeKubeconfigs(dataDir, host string, p *pki) (string, error) {
	write := func(name, user string, cert, key []byte) (string, error) {
		cfg := clientcmdapi.NewConfig()
		cfg.Clusters["packlight-testenv"] = &clientcmdapi.Cluster{Server: host, CertificateAuthorityData: p.caCert}
		cfg.AuthInfos[user] = &clientcmdapi.AuthInfo{ClientCertificateData: cert, ClientKeyData: key}
		cfg.Contexts["packlight-testenv"] = &clientcmdapi.Context{Cluster: "packlight-testenv", AuthInfo: user, Namespace: "default"}
		cfg.CurrentContext = "packlight-testenv"
		path := filepath.Join(dataDir, name)
		if err := clientcmd.WriteToFile(*cfg, path); err != nil {
			return "", fmt.Errorf("writing %s: %w", path, err)
		}
		return path, nil
	}
	if _, err := write("controller-manager.kubeconfig", "system:kube-controller-manager", p.kcmCert, p.kcmKey); err != nil {
		return "", err
	}
	return write("admin.kubeconfig", "packlight-admin", p.adminCert, p.adminKey)
}

func serial() *big.Int {
	n, err := rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 62))
	if err != nil {
		// crypto/rand.Read never fails on Linux (Go 1.24+ panics instead).
		panic(err)
	}
	return n.Add(n, big.NewInt(1))
}

func certPEM(der []byte) []byte {
	return pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der})
}

// keyPEM encodes a key as PKCS#8, which every client we use (client-go,
// rustls via kube-rs) reads.
func keyPEM(key crypto.Signer) ([]byte, error) {
	der, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		return nil, err
	}
	return pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: der}), nil
}
