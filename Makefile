# Tools are pinned in tools/go.mod and built into ./bin, so generation needs
# nothing but Go and the module proxy.
BIN := $(CURDIR)/bin
TOOLS := buf protoc-gen-go protoc-gen-go-grpc protoc-gen-grpc-gateway protoc-gen-openapiv2

.PHONY: generate tools test check-generated

tools:
	@mkdir -p $(BIN)
	cd tools && GOBIN=$(BIN) go install \
		github.com/bufbuild/buf/cmd/buf \
		google.golang.org/protobuf/cmd/protoc-gen-go \
		google.golang.org/grpc/cmd/protoc-gen-go-grpc \
		github.com/grpc-ecosystem/grpc-gateway/v2/protoc-gen-grpc-gateway \
		github.com/grpc-ecosystem/grpc-gateway/v2/protoc-gen-openapiv2

generate: tools
	PATH=$(BIN):$$PATH buf lint
	PATH=$(BIN):$$PATH buf generate

# Fails when the committed generated code differs from what the protos give.
check-generated: generate
	git diff --exit-code -- proto docs/openapi
	@test -z "$$(git status --porcelain -- proto docs/openapi)" || { git status --porcelain -- proto docs/openapi; echo "generated files are not committed"; exit 1; }

test:
	go test ./...
