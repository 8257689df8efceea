#!/usr/bin/env node
// The plugin's entry point: buf generate runs it (buf.gen.yaml) after
// scripts/generate.sh has compiled it.
import { runNodeJs } from "@bufbuild/protoplugin";
import { plugin } from "./plugin.js";

runNodeJs(plugin);
