package main

import (
	"context"
	"errors"
)

func runSimple(ctx context.Context, e *env, args []string) error { return errors.New("not yet") }
func runDemo(ctx context.Context, e *env, args []string) error   { return errors.New("not yet") }
func runBench(ctx context.Context, e *env, args []string) error  { return errors.New("not yet") }
