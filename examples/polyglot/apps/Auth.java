// Auth, either version (Java, the JDK's HttpServer; run with
// `java Auth.java v1` or `java Auth.java v2`: the version is the argument).
// GET /token returns a token for the caller's transaction, signed with this
// version's key; GET /validate?token=T accepts only a token this version
// signed for that transaction. v1 and v2 sign with different keys, so each
// rejects the other's tokens: a transaction that runs on both versions of
// Auth fails, with no fault anywhere.
//
// Run by examples/polyglot behind coordsidecar: it listens on
// 127.0.0.1:$PORT (0: any free port, printed as "listening PORT") and
// appends "txn service version" to $RECORD_FILE for every request it serves.
// It calls nobody, so it has no headers to copy; it reads the transaction
// from the mesh header x-coordinator-txn that its sidecar sets.

import com.sun.net.httpserver.HttpExchange;
import com.sun.net.httpserver.HttpServer;
import java.io.FileOutputStream;
import java.io.IOException;
import java.io.OutputStream;
import java.net.InetSocketAddress;
import java.net.URLDecoder;
import java.nio.charset.StandardCharsets;
import java.util.concurrent.Executors;
import javax.crypto.Mac;
import javax.crypto.spec.SecretKeySpec;

public class Auth {
    static final String SERVICE = "auth-service";
    static String VERSION; // args[0]: v1 or v2
    static FileOutputStream record;

    // What this service saw: the transaction, served at this version.
    static synchronized void record(String txn) throws IOException {
        record.write((txn + " " + SERVICE + " " + VERSION + "\n").getBytes(StandardCharsets.UTF_8));
    }

    static String token(String txn) throws Exception {
        Mac mac = Mac.getInstance("HmacSHA256");
        mac.init(new SecretKeySpec(("auth-key-" + VERSION).getBytes(StandardCharsets.UTF_8), "HmacSHA256"));
        StringBuilder hex = new StringBuilder();
        for (byte b : mac.doFinal(txn.getBytes(StandardCharsets.UTF_8))) {
            hex.append(String.format("%02x", b));
        }
        return VERSION + "." + hex.substring(0, 16);
    }

    static void reply(HttpExchange ex, int status, String body) throws IOException {
        byte[] b = body.getBytes(StandardCharsets.UTF_8);
        ex.getResponseHeaders().set("Content-Type", "text/plain");
        ex.sendResponseHeaders(status, b.length);
        try (OutputStream os = ex.getResponseBody()) {
            os.write(b);
        }
    }

    static void handle(HttpExchange ex) throws IOException {
        try {
            String txn = ex.getRequestHeaders().getFirst("x-coordinator-txn");
            if (txn == null) txn = "-";
            record(txn);
            String path = ex.getRequestURI().getPath(), query = ex.getRequestURI().getRawQuery();
            if (path.equals("/token")) {
                reply(ex, 200, token(txn));
            } else if (path.equals("/validate")) {
                String tok = "";
                for (String kv : query == null ? new String[0] : query.split("&")) {
                    if (kv.startsWith("token=")) tok = URLDecoder.decode(kv.substring(6), StandardCharsets.UTF_8);
                }
                if (tok.equals(token(txn))) {
                    reply(ex, 200, "ok");
                } else {
                    reply(ex, 401, "auth " + VERSION + ": invalid token");
                }
            } else {
                reply(ex, 404, "not found");
            }
        } catch (Exception e) {
            reply(ex, 500, "auth " + VERSION + ": " + e);
        } finally {
            ex.close();
        }
    }

    public static void main(String[] args) throws Exception {
        if (args.length != 1) {
            System.err.println("usage: java Auth.java VERSION");
            System.exit(2);
        }
        VERSION = args[0];
        record = new FileOutputStream(System.getenv("RECORD_FILE"), true);
        String port = System.getenv("PORT");
        HttpServer srv = HttpServer.create(new InetSocketAddress("127.0.0.1", port == null ? 0 : Integer.parseInt(port)), 128);
        srv.createContext("/", Auth::handle);
        srv.setExecutor(Executors.newFixedThreadPool(32)); // the default runs one request at a time
        srv.start();
        System.out.println("listening " + srv.getAddress().getPort());
        System.out.flush();
    }
}
