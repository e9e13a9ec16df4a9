# Convenience aliases; the scripts are the source of truth.
.PHONY: run test check-k8s
run:        ## the whole system locally (Postgres, Redis, migrations, three services)
	bash scripts/run-local.sh
test:       ## every test (what CI runs)
	bash scripts/test.sh
check-k8s:  ## only the offline chart/Tiltfile checks
	bash scripts/check-k8s.sh
