# Convenience aliases; the scripts are the source of truth.
.PHONY: run test check-k8s bench long-tests
run:        ## the whole system locally (Postgres, Redis, migrations, three services)
	bash scripts/run-local.sh
test:       ## every test (what CI runs)
	bash scripts/test.sh
check-k8s:  ## only the offline chart/Tiltfile checks
	bash scripts/check-k8s.sh
bench:      ## release build, then the benchmark beside its ceilings (target/bench/report.json)
	bash scripts/bench.sh
long-tests: ## 5-minute soak, long property tests, deeper schemathesis
	bash scripts/long-tests.sh
