@db-faults
Feature: A run survives its database connections failing, the network failing and the database crashing
  The engine keeps everything in Postgres, so the database is where faults hurt
  most: connections cut by the server, a network that breaks, goes silent or
  crawls, a database that cannot be reached for a while, or one that crashes
  outright and comes back from its write-ahead log. Each fault lands while a
  worker is in the middle of a step, or of a durable timer: just set, or firing. Once the fault is gone, the run must finish
  exactly as the same run would have without it, its log must replay exactly,
  nothing the engine had committed may be lost, and the order service must take
  the order exactly once.

  Background:
    Given the project "acme" with the workflow "order-sync":
      | step     | type      | does                                 | then                |
      | map      | transform | {id: order.id, total: order.sum}     | push                |
      | push     | http_call | POST the mapped order to /orders     | check               |
      | check    | branch    | when push answered 200               | done, else rejected |
      | done     | terminate | succeeded                            |                     |
      | rejected | terminate | failed: the order service refused it |                     |
    And the project "acme" with the workflow "order-follow-up":
      | step   | type      | does                         | then   |
      | wait   | delay     | wait 1 hour                  | remind |
      | remind | http_call | POST the order to /reminders | done   |
      | done   | terminate | succeeded                    |        |

  Scenario Outline: A run survives when <fault> <moment>
    Given the worker will stall <moment>
    When "acme" delivers an order webhook to "order-sync"
    And <fault>
    Then the run succeeds
    And it ends exactly as the same run without the fault
    And the run replays exactly from its log
    And the order service received the order exactly once
    And nothing the engine committed was lost

    Examples: Connections cut by the database
      | fault                                       | moment                                          |
      | the database drops the engine's connections | after step "map" is recorded                    |
      | the database drops the engine's connections | after the request of "push" is sent             |
      | the database drops the engine's connections | while the response of "push" is being recorded  |
      | the database drops the engine's connections | while the step after "check" is being scheduled |

    Examples: The network severed
      | fault                              | moment                                         |
      | the network to the database is cut | after the request of "push" is sent            |
      | the network to the database is cut | while the step after "push" is being scheduled |
      | the network to the database is cut | while the response of "push" is being recorded |

  Scenario: The network to the database goes silent for a moment while an order is on its way
    Given the worker will stall after the request of "push" is sent
    When "acme" delivers an order webhook to "order-sync"
    And the network to the database goes silent for 2.5 seconds
    Then the run succeeds
    And it ends exactly as the same run without the fault
    And the run replays exactly from its log
    And the order service received the order exactly once
    And nothing the engine committed was lost

  Scenario: The network to the database crawls until the run ends
    Given the worker will stall after step "map" is recorded
    When "acme" delivers an order webhook to "order-sync"
    And every message between the engine and the database is delayed by 200 milliseconds until the run ends
    Then the run succeeds
    And it ends exactly as the same run without the fault
    And the run replays exactly from its log
    And the order service received the order exactly once

  Scenario: The database cannot be reached for a while in the middle of a step
    Given the worker will stall while the response of "push" is being recorded
    When "acme" delivers an order webhook to "order-sync"
    And the database is unreachable for 3 seconds
    Then the run succeeds
    And it ends exactly as the same run without the fault
    And the run replays exactly from its log
    And the order service received the order exactly once
    And nothing the engine committed was lost

  @db-crash
  Scenario Outline: The database crashes and restarts <moment>
    Given the worker will stall <moment>
    When "acme" delivers an order webhook to "order-sync"
    And the database crashes and restarts
    Then the run succeeds
    And it ends exactly as the same run without the fault
    And the run replays exactly from its log
    And the order service received the order exactly once
    And nothing the engine committed was lost

    Examples:
      | moment                                         |
      | after step "map" is recorded                   |
      | after the request of "push" is sent            |
      | while the response of "push" is being recorded |
      | while the step after "push" is being scheduled |
      | after step "push" is recorded                  |

  @db-crash
  Scenario: The database crashes while a worker recovers a run another worker left
    Given the worker will crash after the request of "push" is sent
    When "acme" delivers an order webhook to "order-sync"
    And another worker takes over but stalls while it recovers the run
    And the database crashes and restarts
    Then the run succeeds
    And it ends exactly as the same run without the fault
    And the run replays exactly from its log
    And the order service received the order exactly once
    And nothing the engine committed was lost

  Scenario Outline: A follow-up whose timer was just set when <fault> still fires it once
    Given the worker will stall when the timer of "wait" is set
    When "acme" delivers an order webhook to "order-follow-up"
    And <fault>
    And the clock moves forward 2 hours
    Then the run succeeds with the timer of "wait" fired once
    And the order service received the order exactly once
    And nothing the engine committed was lost

    Examples:
      | fault                                       |
      | the database drops the engine's connections |
      | the network to the database is cut          |

    @db-crash
    Examples: The database itself
      | fault                             |
      | the database crashes and restarts |

  Scenario Outline: A follow-up whose timer is firing when <fault> fires it once
    Given a run of "order-follow-up" that is waiting in "wait"
    And the worker will stall when the timer of "wait" fires
    When the clock moves forward 2 hours
    And <fault>
    Then the run succeeds with the timer of "wait" fired once
    And the order service received the order exactly once
    And nothing the engine committed was lost

    Examples:
      | fault                                       |
      | the database drops the engine's connections |
      | the network to the database is cut          |

    @db-crash
    Examples: The database itself
      | fault                             |
      | the database crashes and restarts |

  @intervention
  Scenario: A reminder an operator let go early goes out once though the network to the database goes silent just before it
    Given a run of "order-follow-up" that is waiting in "wait"
    And the worker will stall before the request of "remind" is sent
    When "dana@acme.example" skips "wait" because "the customer asked for the reminder now"
    And the network to the database goes silent for 1 second
    Then the run succeeds
    And the order service received the order exactly once
    And the run replays exactly from its log

  @intervention
  Scenario: A call retried by hand goes out once under its key though the database drops the engine's connections just before it
    Given a run of "order-sync" that is failed at "push"
    And the worker will stall before the request of "push" is sent
    When "dana@acme.example" retries "push" because "the order service is back"
    And the database drops the engine's connections
    Then the run succeeds
    And every attempt at "push" carried the same idempotency key
    And the order service saw 2 attempts but took the order once

  @intervention
  Scenario: The network to the database crawls from the moment an operator lets a held follow-up go until it ends
    Given a run of "order-follow-up" that is paused in "wait"
    When "dana@acme.example" unpauses the run because "the review is done"
    And the clock moves forward 2 hours
    And every message between the engine and the database is delayed by 200 milliseconds until the run ends
    Then the run succeeds
    And the order service received the order exactly once
    And the run replays exactly from its log
