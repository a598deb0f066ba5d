//! The manifests of the security test: the apps (namespaces with and without
//! injection, web with two ports, a rate-limited service, callers with their own
//! service accounts) and the authorization policies. Separate from
//! `local_security.rs` so the test reads as its steps, not as YAML.

pub(crate) const APPS: &str = "\
apiVersion: v1
kind: Namespace
metadata: {name: shop, labels: {istio-injection: enabled}}
---
apiVersion: v1
kind: Namespace
metadata: {name: ops, labels: {istio-injection: enabled}}
---
apiVersion: v1
kind: Namespace
metadata: {name: legacy}
---
apiVersion: v1
kind: Service
metadata: {name: web, namespace: shop}
spec:
  selector: {app: web}
  ports:
  - {name: http, port: 80, targetPort: 8080}
  - {name: http-alt, port: 9090, targetPort: 9090}
---
apiVersion: apps/v1
kind: Deployment
metadata: {name: web, namespace: shop}
spec:
  template:
    metadata: {labels: {app: web}}
    spec:
      serviceAccountName: web
      containers:
      - name: web
        image: web
        ports: [{containerPort: 8080}, {containerPort: 9090}]
---
apiVersion: v1
kind: Service
metadata: {name: limited, namespace: shop}
spec:
  selector: {app: limited}
  ports: [{name: http, port: 8080}]
---
apiVersion: apps/v1
kind: Deployment
metadata: {name: limited, namespace: shop}
spec:
  template:
    metadata:
      labels: {app: limited}
      annotations: {ratelimit.mesh.io/local: 3/60s}
    spec:
      containers:
      - {name: limited, image: x, ports: [{containerPort: 8080}]}
---
apiVersion: apps/v1
kind: Deployment
metadata: {name: client, namespace: shop}
spec:
  template:
    metadata: {labels: {app: client}}
    spec:
      serviceAccountName: client
      containers: [{name: client, image: curl}]
---
apiVersion: apps/v1
kind: Deployment
metadata: {name: intruder, namespace: shop}
spec:
  template:
    metadata: {labels: {app: intruder}}
    spec:
      serviceAccountName: intruder
      containers: [{name: intruder, image: curl}]
---
apiVersion: apps/v1
kind: Deployment
metadata: {name: admin, namespace: ops}
spec:
  template:
    metadata: {labels: {app: admin}}
    spec:
      serviceAccountName: admin
      containers: [{name: admin, image: curl}]
---
apiVersion: apps/v1
kind: Deployment
metadata: {name: outside, namespace: legacy}
spec:
  template:
    metadata: {labels: {app: outside}}
    spec:
      containers: [{name: outside, image: curl}]
";

pub(crate) const POLICIES: &str = "\
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {name: web-allow, namespace: shop}
spec:
  selector: {matchLabels: {app: web}}
  action: ALLOW
  rules:
  - from: [{source: {principals: [cluster.local/ns/shop/sa/client]}}]
    to: [{operation: {methods: [GET], paths: [/public/*, /api/*]}}]
  - from: [{source: {namespaces: [ops]}}]
    to: [{operation: {methods: [GET, POST]}}]
  - to: [{operation: {paths: [/healthz]}}]
  - from: [{source: {principals: [cluster.local/ns/shop/sa/client]}}]
    to: [{operation: {methods: [POST], paths: [/api/orders]}}]
    when: [{key: 'request.headers[x-tenant]', values: [acme, globex*]}]
---
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {name: web-deny, namespace: shop}
spec:
  selector: {matchLabels: {app: web}}
  action: DENY
  rules:
  - to: [{operation: {paths: ['/api/admin*', /public/secret]}}]
  - from: [{source: {notNamespaces: [shop, ops]}}]
  - to: [{operation: {ports: ['9090']}}]
";
