// Command testenv is packlight's Kubernetes test bench: a real control plane
// on loopback, in one process.
//
// It runs embedded etcd, kube-apiserver (TLS, RBAC+Node authorization, the
// default admission plugins, service-account token issuing) and the
// kube-controller-manager controllers that make object lifecycles behave as
// on a cluster (garbage collector, namespace, service account, root CA
// publisher). It then installs the CRD files it is given (Istio, Gateway
// API), waits until they are Established, writes an admin kubeconfig into
// the data directory and prints
//
//	KUBECONFIG=<data-dir>/admin.kubeconfig
//
// on stdout. It stops on SIGTERM/SIGINT, and with --exit-on-stdin-eof also
// when its stdin closes (the parent test binary exited).
//
// It never listens on anything but 127.0.0.1 and never runs kubelets: pods
// are stored, not started.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"path/filepath"
	"strings"
	"syscall"
	"time"

	"k8s.io/klog/v2"
)

type stringList []string

func (s *stringList) String() string { return strings.Join(*s, ",") }
func (s *stringList) Set(v string) error {
	for _, p := range strings.Split(v, ",") {
		if p != "" {
			*s = append(*s, p)
		}
	}
	return nil
}

type options struct {
	dataDir        string
	port           int
	crds           stringList
	exitOnStdinEOF bool
	removeDataDir  bool
	verbosity      string
}

func main() {
	var o options
	// Our own flag set: the Kubernetes packages register dozens of global
	// flags (cadvisor, klog) on flag.CommandLine that mean nothing here.
	fs := flag.NewFlagSet("testenv", flag.ExitOnError)
	fs.StringVar(&o.dataDir, "data-dir", "", "directory for etcd data, certificates and kubeconfigs (required; created if missing)")
	fs.IntVar(&o.port, "port", 0, "API server port on 127.0.0.1 (0 picks a free one)")
	fs.Var(&o.crds, "crds", "CRD manifest file or directory of *.yaml (repeatable, comma-separated); other kinds in the files are applied too")
	fs.BoolVar(&o.exitOnStdinEOF, "exit-on-stdin-eof", false, "shut down when stdin reaches EOF (the parent process is gone)")
	fs.BoolVar(&o.removeDataDir, "remove-data-dir", false, "remove --data-dir on shutdown")
	fs.StringVar(&o.verbosity, "v", "0", "klog verbosity of the Kubernetes components")
	_ = fs.Parse(os.Args[1:]) // ExitOnError: never returns an error

	if err := run(o); err != nil {
		fmt.Fprintf(os.Stderr, "testenv: %v\n", err)
		os.Exit(1)
	}
}

func run(o options) error {
	if o.dataDir == "" {
		return errors.New("--data-dir is required")
	}
	dataDir, err := filepath.Abs(o.dataDir)
	if err != nil {
		return err
	}
	if err := os.MkdirAll(dataDir, 0o700); err != nil {
		return err
	}
	_ = os.Remove(filepath.Join(dataDir, "ready"))
	if o.removeDataDir {
		defer os.RemoveAll(dataDir)
	}

	klogFlags := flag.NewFlagSet("klog", flag.ContinueOnError)
	klog.InitFlags(klogFlags)
	if err := klogFlags.Set("v", o.verbosity); err != nil {
		return err
	}

	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	signals := make(chan os.Signal, 2)
	signal.Notify(signals, syscall.SIGTERM, syscall.SIGINT)
	go func() {
		s := <-signals
		klog.Infof("testenv: %v received, shutting down", s)
		cancel()
	}()
	if o.exitOnStdinEOF {
		// The parent that closes our stdin also closes the pipes our
		// stdout/stderr go to. Receiving SIGPIPE (instead of its default,
		// exiting at once) turns those writes into errors, so shutdown and
		// --remove-data-dir still run.
		signal.Notify(make(chan os.Signal, 1), syscall.SIGPIPE)
		go func() {
			_, _ = io.Copy(io.Discard, os.Stdin)
			klog.Info("testenv: stdin closed, shutting down")
			cancel()
		}()
	}

	// A bench that hangs in shutdown would outlive its test run: give the
	// components 30s after the stop request, then exit regardless.
	go func() {
		<-ctx.Done()
		time.Sleep(30 * time.Second)
		klog.Error("testenv: shutdown took over 30s, exiting")
		if o.removeDataDir {
			_ = os.RemoveAll(dataDir)
		}
		os.Exit(1)
	}()

	pki, err := writePKI(dataDir)
	if err != nil {
		return fmt.Errorf("certificates: %w", err)
	}

	etcd, etcdURL, err := startEtcd(filepath.Join(dataDir, "etcd"))
	if err != nil {
		return fmt.Errorf("etcd: %w", err)
	}
	defer etcd.Close()

	apiCtx, stopAPI := context.WithCancel(context.Background())
	apiDone := make(chan error, 1)
	host, err := startAPIServer(apiCtx, dataDir, o.port, etcdURL, pki, apiDone)
	if err != nil {
		stopAPI()
		return fmt.Errorf("kube-apiserver: %w", err)
	}
	defer func() {
		stopAPI()
		select {
		case <-apiDone:
		case <-time.After(20 * time.Second):
			klog.Warning("testenv: kube-apiserver did not stop within 20s")
		}
	}()

	admin, err := writeKubeconfigs(dataDir, host, pki)
	if err != nil {
		return err
	}

	if err := waitReady(ctx, admin, apiDone); err != nil {
		return err
	}

	kcmDone := make(chan error, 1)
	if err := startControllers(ctx, filepath.Join(dataDir, "controller-manager.kubeconfig"), pki.caCertFile, kcmDone); err != nil {
		return fmt.Errorf("kube-controller-manager: %w", err)
	}

	if err := installManifests(ctx, admin, o.crds); err != nil {
		return fmt.Errorf("installing CRDs: %w", err)
	}

	if err := os.WriteFile(filepath.Join(dataDir, "ready"), []byte(admin+"\n"), 0o600); err != nil {
		return err
	}
	fmt.Printf("KUBECONFIG=%s\n", admin)
	klog.Infof("testenv: ready at %s", host)

	select {
	case <-ctx.Done():
		return nil
	case err := <-apiDone:
		return fmt.Errorf("kube-apiserver stopped: %v", err)
	case err := <-kcmDone:
		return fmt.Errorf("kube-controller-manager stopped: %v", err)
	case err := <-etcd.Err():
		return fmt.Errorf("etcd stopped: %v", err)
	}
}
