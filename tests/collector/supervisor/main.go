// Command opampsupervisor is gitamp's test build of the OpenTelemetry Collector's OpAMP supervisor.
//
// The upstream command (cmd/opampsupervisor in opentelemetry-collector-contrib) cannot be installed with
// `go install` because its go.mod carries local replace directives. This small main module imports the
// supervisor's public packages instead, so it builds from the Go module proxy alone.
// Built by scripts/build-peers.sh; run as `opampsupervisor --config supervisor.yaml`.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"os"
	"os/signal"
	"syscall"

	"go.opentelemetry.io/collector/featuregate"

	"github.com/open-telemetry/opentelemetry-collector-contrib/cmd/opampsupervisor/supervisor"
	"github.com/open-telemetry/opentelemetry-collector-contrib/cmd/opampsupervisor/supervisor/config"
	"github.com/open-telemetry/opentelemetry-collector-contrib/cmd/opampsupervisor/supervisor/telemetry"
)

func main() {
	if err := run(os.Args[1:]); err != nil {
		fmt.Fprintf(os.Stderr, "opampsupervisor: %v\n", err)
		os.Exit(1)
	}
}

func run(args []string) error {
	flags := flag.NewFlagSet("opampsupervisor", flag.ContinueOnError)
	configPath := flags.String("config", "", "path to the supervisor's YAML configuration file")
	featuregate.GlobalRegistry().RegisterFlags(flags)
	if err := flags.Parse(args); err != nil {
		return err
	}
	if *configPath == "" {
		return errors.New("--config is required")
	}

	cfg, err := config.Load(*configPath)
	if err != nil {
		return fmt.Errorf("loading %s: %w", *configPath, err)
	}

	logger, err := telemetry.NewLogger(cfg.Telemetry.Logs)
	if err != nil {
		return fmt.Errorf("creating logger: %w", err)
	}
	defer func() { _ = logger.Sync() }()

	// The supervisor's own context stays alive until Shutdown has stopped the collector; the signal
	// only tells us when to call Shutdown.
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	signals := make(chan os.Signal, 2)
	signal.Notify(signals, os.Interrupt, syscall.SIGTERM)

	sup, err := supervisor.NewSupervisor(ctx, logger.Named("supervisor"), cfg)
	if err != nil {
		return fmt.Errorf("creating supervisor: %w", err)
	}
	if err := sup.Start(ctx); err != nil {
		return fmt.Errorf("starting supervisor: %w", err)
	}

	<-signals
	sup.Shutdown()
	return nil
}
