// Command composecheck loads a Compose file the way `docker compose config` does and prints the
// resolved project as JSON, for machines that have the docker client without its compose plugin.
//
//	composecheck [-f compose.yaml]... [--project-name NAME] [--project-directory DIR]
//
// It uses github.com/compose-spec/compose-go/v2, the loader behind `docker compose`, with the same
// steps as `docker compose config --format json`: the OS environment (and a .env file) for
// interpolation, so `${VAR:?message}` fails when VAR is unset or empty; schema validation;
// normalisation; resolved paths; consistency checks. The project is printed on stdout with exit
// status 0; any error goes to stderr with exit status 1.
package main

import (
	"bytes"
	"context"
	"errors"
	"flag"
	"fmt"
	"os"
	"strings"

	"github.com/compose-spec/compose-go/v2/cli"
)

// fileList collects repeated -f options.
type fileList []string

func (f *fileList) String() string     { return strings.Join(*f, ",") }
func (f *fileList) Set(v string) error { *f = append(*f, v); return nil }

func main() {
	var files fileList
	flags := flag.NewFlagSet("composecheck", flag.ContinueOnError)
	flags.Var(&files, "f", "Compose file (repeatable; default: COMPOSE_FILE or compose.yaml found from the current directory)")
	flags.Var(&files, "file", "same as -f")
	name := flags.String("project-name", "", "project name (default: the file's `name:`, COMPOSE_PROJECT_NAME or the directory name)")
	flags.StringVar(name, "p", "", "same as --project-name")
	dir := flags.String("project-directory", "", "project directory (default: the directory of the first Compose file)")
	if err := flags.Parse(os.Args[1:]); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			os.Exit(0)
		}
		os.Exit(1)
	}
	if flags.NArg() > 0 {
		fmt.Fprintf(os.Stderr, "composecheck: unexpected arguments: %s\n", strings.Join(flags.Args(), " "))
		os.Exit(1)
	}

	out, err := run(context.Background(), files, *name, *dir)
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	if _, err := os.Stdout.Write(out); err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
}

func run(ctx context.Context, files []string, name, dir string) ([]byte, error) {
	// The same options, in the same order, as `docker compose config`.
	opts := []cli.ProjectOptionsFn{
		cli.WithInterpolation(true),
		cli.WithResolvedPaths(true),
		cli.WithNormalization(true),
		cli.WithConsistency(true),
		cli.WithDefaultProfiles(),
		cli.WithDiscardEnvFile,
		cli.WithWorkingDirectory(dir),
		// The OS environment wins over any .env file.
		cli.WithOsEnv,
	}
	if _, ok := os.LookupEnv("PWD"); !ok {
		pwd, err := os.Getwd()
		if err != nil {
			return nil, err
		}
		opts = append(opts, cli.WithEnv([]string{"PWD=" + pwd}))
	}
	opts = append(opts,
		cli.WithEnvFiles(),
		cli.WithDotEnv,
		cli.WithConfigFileEnv,
		cli.WithDefaultConfigPath,
		// The project directory may differ from the current one: read its .env as well.
		cli.WithEnvFiles(),
		cli.WithDotEnv,
		cli.WithDefaultProfiles(),
		cli.WithName(name),
	)

	options, err := cli.NewProjectOptions(files, opts...)
	if err != nil {
		return nil, err
	}
	project, err := options.LoadProject(ctx)
	if err != nil {
		return nil, err
	}
	if project.Name == "" {
		return nil, errors.New("project name can't be empty. Use `--project-name` to set a valid name")
	}
	if project, err = project.WithServicesEnabled(); err != nil {
		return nil, err
	}
	if project, err = project.WithSelectedServices(nil); err != nil {
		return nil, err
	}
	project = project.WithoutUnnecessaryResources()
	if project, err = project.WithServicesEnvironmentResolved(true); err != nil {
		return nil, err
	}
	if err := project.CheckContainerNameUnicity(); err != nil {
		return nil, err
	}
	content, err := project.MarshalJSON()
	if err != nil {
		return nil, err
	}
	// Interpolation is done: a literal "$" is written "$$", as `docker compose config` does.
	return bytes.ReplaceAll(content, []byte("$"), []byte("$$")), nil
}
