# The original service's commands, kept as aliases of ours.
.PHONY: demo test build-image run-service run-client services stop

demo:            ## run the whole job end to end (install, services, build mnist, run it)
	bash scripts/demo.sh
test:            ## run every test against real services
	bash scripts/test.sh
build-image:     ## original: build the service; now installs and builds the workspace + base images
	bash scripts/install.sh && bash scripts/services.sh up && bash scripts/base-images.sh
run-service:     ## original: run the service; now the API + a worker against local services
	bash scripts/services.sh up && bash scripts/stack.sh up
run-client:      ## original: run the test client; now submits examples/mnist and follows it (local admin token from stack.sh)
	M1L0_TOKEN_FILE="$${M1L0_TOKEN_FILE:-$${M1L0_STATE_DIR:-/var/lib/m1l0-dev}/api/admin-token}" node apps/cli/dist/main.js build examples/mnist/m1l0.yaml --follow
services:
	bash scripts/services.sh up
stop:
	bash scripts/stack.sh down; bash scripts/services.sh down
